"""Capture sources: formats, frame numbering, times, damage notes, gzip, stdin streaming."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, wrpcap

from pcapsmtp.capture import CaptureError, Frame, open_capture
from tests.craft_pcap import (
    MAGIC_NS,
    ng_block,
    ng_epb,
    ng_idb,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_file,
    pcap_header,
    pcap_record,
)

REPO = Path(__file__).resolve().parent.parent


def _packets(n: int = 5) -> list:
    pkts = []
    for i in range(n):
        p = Ether() / IP(src="192.0.2.1", dst="198.51.100.2") / TCP(dport=25, seq=i) / (b"x" * i)
        p.time = 1_700_000_000 + i * 0.25
        pkts.append(p)
    return pkts


def _read(path: Path | str) -> tuple[list[Frame], object]:
    with open_capture(str(path)) as reader:
        frames = list(reader)
    return frames, reader.info


# ---- classic pcap ---------------------------------------------------------------


def test_scapy_pcap_numbers_times_and_info(tmp_path: Path) -> None:
    pkts = _packets()
    wrpcap(str(tmp_path / "a.pcap"), pkts)
    frames, info = _read(tmp_path / "a.pcap")
    assert [f.number for f in frames] == [1, 2, 3, 4, 5]
    assert [f.time for f in frames] == [1_700_000_000 + i * 0.25 for i in range(5)]
    assert [f.data for f in frames] == [bytes(p) for p in pkts]
    assert frames[2].caplen == frames[2].origlen == 54 + 2
    assert all(f.linktype == 1 for f in frames)
    assert (info.format, info.compressed, info.linktypes) == ("pcap", False, [1])
    assert (info.packets, info.first, info.last) == (5, 1_700_000_000.0, 1_700_000_001.0)
    assert info.snaplen == 65535  # scapy's default header
    assert info.problem is None


@pytest.mark.parametrize("endian", ["<", ">"])
def test_both_byte_orders_and_nanoseconds(tmp_path: Path, endian: str) -> None:
    recs = [(1, 123_456_789, b"a" * 20), (2, 999_999_999, b"b" * 30)]
    path = tmp_path / "ns.pcap"
    path.write_bytes(pcap_file(recs, endian, MAGIC_NS, snaplen=1500, linktype=101))
    frames, info = _read(path)
    # small epoch values, so float resolution is far below a nanosecond here
    assert frames[0].time == pytest.approx(1.123456789, abs=1e-15)
    assert frames[1].time == pytest.approx(2.999999999, abs=1e-15)
    assert [f.caplen for f in frames] == [20, 30]
    assert info.linktypes == [101] and info.snaplen == 1500


def test_microsecond_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "be.pcap"
    path.write_bytes(pcap_file([(1_700_000_000, 500_000, b"z" * 60)], ">", snaplen=96))
    frames, info = _read(path)
    assert frames[0].time == 1_700_000_000.5
    assert info.snaplen == 96


def test_first_and_last_are_min_and_max(tmp_path: Path) -> None:
    """Out-of-order timestamps (merged captures) still give the real time span."""
    path = tmp_path / "ooo.pcap"
    path.write_bytes(pcap_file([(10, 0, b"a"), (5, 0, b"b"), (20, 0, b"c"), (15, 0, b"d")]))
    _, info = _read(path)
    assert (info.first, info.last, info.packets) == (5.0, 20.0, 4)


def test_zero_length_records_are_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty-records.pcap"
    path.write_bytes(pcap_file([(1, 0, b""), (2, 0, b"x"), (3, 0, b"")]))
    frames, _ = _read(path)
    assert [(f.number, f.data) for f in frames] == [(1, b""), (2, b"x"), (3, b"")]


# ---- damage ------------------------------------------------------------------


def test_truncated_mid_record_delivers_frames_before(tmp_path: Path) -> None:
    whole = pcap_file([(i, 0, bytes(100)) for i in range(1, 6)])
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[: 24 + 3 * 116 + 16 + 40])  # frame 4 cut after 40 data bytes
    frames, info = _read(path)
    assert [f.number for f in frames] == [1, 2, 3]
    assert info.packets == 3
    assert info.problem == "capture cut short in frame 4: record cut after 40 of 100 bytes"


def test_truncated_in_record_header(tmp_path: Path) -> None:
    whole = pcap_file([(1, 0, bytes(10)), (2, 0, bytes(10))])
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[: 24 + 26 + 7])
    frames, info = _read(path)
    assert len(frames) == 1
    assert info.problem == "capture cut short in frame 2: record header cut after 7 of 16 bytes"


def test_absurd_record_length_stops_without_raising(tmp_path: Path) -> None:
    """Like suricata-verify's smtp-to-comma: a 3.9 GB record length after good frames."""
    good = pcap_file([(1, 0, b"a" * 60), (2, 0, b"b" * 60)])
    bogus = bytes.fromhex("00000000 00000000 0000 00ea 0000 00ea".replace(" ", ""))
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(good + bogus + b"junk" * 100)
    frames, info = _read(path)
    assert len(frames) == 2
    assert info.problem == "capture cut short in frame 3: record header says 3,925,868,544 bytes"


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "foo.txt"
    path.write_text("Hello world, this is text\n")
    with pytest.raises(CaptureError) as exc:
        open_capture(str(path))
    assert str(exc.value) == f"not a pcap or pcapng file: {path} (starts with 'Hello world, thi')"


def test_binary_non_capture_shows_hex(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00\x01\x02\x03\xff\xfe\xfd\xfc\x00")
    with pytest.raises(CaptureError, match=r"starts with 0x00010203fffefdfc\)$"):
        open_capture(str(path))


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="^empty file: "):
        open_capture(str(empty))
    with pytest.raises(CaptureError, match="^no such file: .*nope.pcap$"):
        open_capture(str(tmp_path / "nope.pcap"))
    with pytest.raises(CaptureError, match="^is a directory"):
        open_capture(str(tmp_path))


def test_header_cut_short_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(pcap_header()[:10])
    with pytest.raises(CaptureError, match="pcap file header cut short after 10 bytes"):
        open_capture(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.pcap"
    path.write_bytes(pcap_file([]))
    path.chmod(0)
    with pytest.raises(CaptureError, match="^permission denied: "):
        open_capture(str(path))


def test_header_only_file_has_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "hdr.pcap"
    path.write_bytes(pcap_header(snaplen=262144, linktype=276))
    frames, info = _read(path)
    assert frames == [] and info.problem is None
    assert (info.packets, info.first, info.linktypes, info.snaplen) == (0, None, [276], 262144)


# ---- gzip -----------------------------------------------------------------------


def test_gzip_detected_by_magic_not_extension(tmp_path: Path) -> None:
    raw = pcap_file([(i, 0, bytes([i]) * 50) for i in range(1, 4)])
    path = tmp_path / "no-extension"
    path.write_bytes(gzip.compress(raw))
    frames, info = _read(path)
    assert [f.data[0] for f in frames] == [1, 2, 3]
    assert info.compressed is True and info.problem is None


def test_gzip_multi_member(tmp_path: Path) -> None:
    raw = pcap_file([(i, 0, bytes([i]) * 50) for i in range(1, 5)])
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(gzip.compress(raw[:70]) + gzip.compress(raw[70:]))
    frames, _ = _read(path)
    assert [f.number for f in frames] == [1, 2, 3, 4]


def test_gzip_truncated_becomes_problem(tmp_path: Path) -> None:
    raw = pcap_file([(i, 0, os.urandom(200)) for i in range(1, 50)])
    comp = gzip.compress(raw, compresslevel=1)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(comp[: len(comp) // 2])
    frames, info = _read(path)
    assert 0 < len(frames) < 49
    assert [f.number for f in frames] == list(range(1, len(frames) + 1))
    assert "gzip data cut short" in info.problem
    assert f"frame {len(frames) + 1}" in info.problem


def test_gzip_corrupt_crc_becomes_problem(tmp_path: Path) -> None:
    raw = pcap_file([(1, 0, b"a" * 100)])
    comp = bytearray(gzip.compress(raw))
    comp[-8] ^= 0xFF  # CRC32 in the trailer
    path = tmp_path / "crc.pcap.gz"
    path.write_bytes(bytes(comp))
    frames, info = _read(path)
    assert len(frames) == 1  # the data itself inflated fine
    assert info.problem is not None and "corrupt gzip data" in info.problem


def test_gzip_of_text_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(b"Hello"))
    with pytest.raises(CaptureError, match=r"not a pcap or pcapng file: .*\(starts with 'Hello'\)"):
        open_capture(str(path))


# ---- pcapng -----------------------------------------------------------------------


def test_scapy_pcapng(tmp_path: Path) -> None:
    pkts = _packets(3)
    path = tmp_path / "a.pcapng"
    with PcapNgWriter(str(path)) as w:
        for p in pkts:
            w.write(p)
    frames, info = _read(path)
    assert info.format == "pcapng" and info.linktypes == [1]
    assert [f.time for f in frames] == [1_700_000_000.0, 1_700_000_000.25, 1_700_000_000.5]
    assert [f.data for f in frames] == [bytes(p) for p in pkts]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_tsresol_and_block_kinds(tmp_path: Path, endian: str) -> None:
    e = endian
    blob = b"".join([
        ng_shb(e),
        ng_idb(1, snaplen=262144, endian=e),                 # microseconds (default)
        ng_idb(276, snaplen=96, tsresol=9, endian=e),        # nanoseconds
        ng_idb(101, tsresol=0x80 | 20, tsoffset=100, endian=e),  # 2^-20 s, +100 s
        ng_block(5, b"statistics are skipped", e),           # interface statistics
        ng_epb(0, 1_700_000_000_250_000, b"eth", endian=e),
        ng_epb(1, 1_700_000_000_123_456_789, b"sll2", origlen=400, endian=e),
        ng_block(0x0BAD, b"unknown block", e),
        ng_epb(2, 3 << 19, b"raw", endian=e),               # 1.5 s + offset 100 s
        ng_spb(b"simple!", endian=e),
        ng_pb(1, 1_700_000_002_000_000_000, b"old", endian=e),
    ])
    path = tmp_path / "multi.pcapng"
    path.write_bytes(blob)
    frames, info = _read(path)
    assert [f.number for f in frames] == [1, 2, 3, 4, 5]
    assert [f.linktype for f in frames] == [1, 276, 101, 1, 276]
    assert [f.data for f in frames] == [b"eth", b"sll2", b"raw", b"simple!", b"old"]
    assert frames[0].time == 1_700_000_000.25
    assert frames[1].time == pytest.approx(1_700_000_000.123456789, abs=2.5e-7)
    assert (frames[1].caplen, frames[1].origlen) == (4, 400)
    assert frames[2].time == 101.5
    assert frames[3].time == frames[2].time == 101.5  # SPB has no time: clock carries over
    assert frames[4].time == 1_700_000_002.0
    assert info.linktypes == [1, 276, 101]
    assert info.snaplen == 96  # smallest declared; 0 means unlimited
    assert (info.first, info.last) == (101.5, 1_700_000_002.0)


def test_pcapng_sections_reset_interfaces_and_byte_order(tmp_path: Path) -> None:
    blob = (ng_shb("<") + ng_idb(1) + ng_epb(0, 1_000_000, b"a")
            + ng_shb(">") + ng_idb(113, endian=">") + ng_epb(0, 2_000_000, b"b", endian=">"))
    path = tmp_path / "sections.pcapng"
    path.write_bytes(blob)
    frames, info = _read(path)
    assert [(f.number, f.linktype, f.time, f.data) for f in frames] == [
        (1, 1, 1.0, b"a"), (2, 113, 2.0, b"b")]
    assert info.linktypes == [1, 113]


def test_pcapng_bad_block_length_stops(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"a") + ng_epb(0, 2, b"b")
    bad = ng_epb(0, 3, b"c")
    bad = bad[:4] + (7).to_bytes(4, "little") + bad[8:]  # not a multiple of 4
    path = tmp_path / "bad.pcapng"
    path.write_bytes(good + bad + ng_epb(0, 4, b"d"))
    frames, info = _read(path)
    assert [f.data for f in frames] == [b"a", b"b"]
    assert info.problem.startswith("capture cut short in frame 3: block at byte ")
    assert info.problem.endswith("says 7 bytes")


def test_pcapng_truncated_block(tmp_path: Path) -> None:
    blob = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"a" * 40) + ng_epb(0, 2, b"b" * 40)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(blob[:-10])
    frames, info = _read(path)
    assert len(frames) == 1
    assert info.problem == "capture cut short in frame 2: block cut after 62 of 72 bytes"


def test_pcapng_unknown_interface_stops(tmp_path: Path) -> None:
    path = tmp_path / "iface.pcapng"
    path.write_bytes(ng_shb() + ng_idb(1) + ng_epb(0, 1, b"a") + ng_epb(3, 2, b"b"))
    frames, info = _read(path)
    assert len(frames) == 1
    assert "frame 2" in info.problem and "interface 3" in info.problem


# ---- stdin ------------------------------------------------------------------------

_STDIN_SCRIPT = textwrap.dedent("""
    import sys
    from pcapsmtp.capture import open_capture
    r = open_capture("-")
    for f in r:
        print(f.number, f.caplen, flush=True)
    print("info", r.info.file, r.info.packets, r.info.compressed, r.info.problem, flush=True)
""")


def test_stdin_reads_a_gzipped_capture(tmp_path: Path) -> None:
    raw = pcap_file([(i, 0, bytes(i * 10)) for i in range(1, 4)])
    out = subprocess.run([sys.executable, "-c", _STDIN_SCRIPT], input=gzip.compress(raw),
                         capture_output=True, cwd=REPO, timeout=30, check=True)
    assert out.stdout.decode().splitlines() == ["1 10", "2 20", "3 30", "info - 3 True None"]


def test_stdin_empty_is_an_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _STDIN_SCRIPT], input=b"",
                         capture_output=True, cwd=REPO, timeout=30)
    assert out.returncode != 0
    assert b"CaptureError: empty input: standard input" in out.stderr


def test_stdin_streams_before_the_writer_closes() -> None:
    """tcpdump -U -w - | pcapsmtp: a frame must come out while the pipe is still open."""
    proc = subprocess.Popen([sys.executable, "-c", _STDIN_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(pcap_header() + pcap_record(1, 0, b"A" * 42))
        proc.stdin.flush()
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=20)
        assert line == [b"1 42\n"], "no frame delivered while the write end was open"
        proc.stdin.write(pcap_record(2, 0, b"B" * 7))
        proc.stdin.close()
        rest = proc.stdout.read().decode().splitlines()
        assert rest == ["2 7", "info - 2 False None"]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_caplen_a_little_over_snaplen_is_tolerated_far_over_is_corrupt(tmp_path: Path) -> None:
    """Some writers exceed their snaplen (offload super-packets); megabytes over is damage."""
    blob = (pcap_header(snaplen=96) + pcap_record(1, 0, b"a" * 200)
            + pcap_record(2, 0, b"b" * 10)[:8] + (2_000_000).to_bytes(4, "little") * 2)
    path = tmp_path / "over.pcap"
    path.write_bytes(blob + b"c" * 100)
    frames, info = _read(path)
    assert [f.caplen for f in frames] == [200]
    assert info.problem == "capture cut short in frame 2: record header says 2,000,000 bytes"


def test_gzipped_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng.gz"
    path.write_bytes(gzip.compress(ng_shb() + ng_idb(113) + ng_epb(0, 5_000_000, b"sll")))
    frames, info = _read(path)
    assert [(f.linktype, f.time, f.data) for f in frames] == [(113, 5.0, b"sll")]
    assert (info.format, info.compressed) == ("pcapng", True)
