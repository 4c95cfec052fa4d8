"""Measure open_capture (and the Decoder) against scapy's raw readers.  Not a test.

    python tests/craft_bench.py [N]

Writes N (default 300,000) 69-byte Ethernet/IPv4/TCP records as pcap and pcapng into
a temporary directory, then times reading them, best of five runs each, in CPU time
(process_time) so that other work on a shared machine does not distort the comparison.
"""

from __future__ import annotations

import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapNgReader, RawPcapReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcapsmtp.capture import open_capture  # noqa: E402
from pcapsmtp.packets import Decoder  # noqa: E402
from tests.craft_pcap import ng_epb, ng_idb, ng_shb, pcap_header  # noqa: E402


def write_files(folder: Path, n: int) -> tuple[Path, Path]:
    pkt = bytes(Ether() / IP(src="192.0.2.1", dst="198.51.100.2")
                / TCP(sport=40000, dport=25, flags="PA") / b"RCPT TO:<x@y>\r\n")
    rec = struct.Struct("<IIII")
    pcap, ng = folder / "bench.pcap", folder / "bench.pcapng"
    with open(pcap, "wb") as f:
        f.write(pcap_header())
        f.write(b"".join(rec.pack(1_700_000_000 + i // 1000, i % 1_000_000, len(pkt), len(pkt))
                         + pkt for i in range(n)))
    with open(ng, "wb") as f:
        f.write(ng_shb() + ng_idb(1))
        f.write(b"".join(ng_epb(0, 1_700_000_000_000_000 + i, pkt) for i in range(n)))
    return pcap, ng


def best(fn: Callable[[], int], runs: int = 5) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(runs):
        t0 = time.process_time()
        count = fn()
        times.append(time.process_time() - t0)
    return min(times), count


def ours(path: Path) -> int:
    n = 0
    with open_capture(str(path)) as r:
        for frame in r:
            n += len(frame.data) > 0
    return n


def ours_decoded(path: Path) -> int:
    d = Decoder()
    n = 0
    with open_capture(str(path)) as r:
        for frame in r:
            n += d.decode(frame) is not None
    return n


def scapy_raw(reader: type, path: Path) -> int:
    n = 0
    with reader(str(path)) as r:
        for data, _meta in r:
            n += len(data) > 0
    return n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    with tempfile.TemporaryDirectory() as tmp:
        pcap, ng = write_files(Path(tmp), n)
        rows = [
            ("pcap   open_capture", lambda: ours(pcap)),
            ("pcap   scapy RawPcapReader", lambda: scapy_raw(RawPcapReader, pcap)),
            ("pcapng open_capture", lambda: ours(ng)),
            ("pcapng scapy RawPcapNgReader", lambda: scapy_raw(RawPcapNgReader, ng)),
            ("pcap   open_capture + Decoder", lambda: ours_decoded(pcap)),
        ]
        for name, fn in rows:
            secs, count = best(fn)
            print(f"{name:32} {secs:6.2f} s  {count / secs:>10,.0f} frames/s  ({count:,})")


if __name__ == "__main__":
    main()
