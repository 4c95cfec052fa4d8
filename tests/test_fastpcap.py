"""The C pcap reader (pcapsmtp/_fastpcap.c) against the Python reader and decoder.

The C module is optional: it reads classic pcap records and pcapng enhanced packet
blocks and decodes the common Ethernet/IPv4/TCP frames itself, and must give exactly
what CaptureReader's Python loops followed by Decoder.decode give -- the same Segments
(or the same Frames left for Python to decode), the same frame times to the last bit,
the same counts, the same capture info and the same note when a file is cut or
corrupt -- with and without a worker shard.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import random
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Dot1Q, Ether

from pcapsmtp import analyze as analyze_mod
from pcapsmtp import packets
from pcapsmtp.capture import open_capture
from pcapsmtp.packets import Decoder, Segment, shard_hash
from pcapsmtp.render.json import render as render_json
from tests.craft_pcap import (
    MAGIC_NS,
    ng_block,
    ng_epb,
    ng_from_pcap,
    ng_idb,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_file,
    pcap_header,
    pcap_record,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

if packets._fastpcap is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must build the optional C reader pcapsmtp/_fastpcap.c "
                           "(pip install needs a C compiler and the Python headers)")
    pytestmark = pytest.mark.skip(
        reason="the optional C reader was not built (no C compiler at install time)")


@pytest.fixture(autouse=True)
def _not_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCAPSMTP_PURE_PYTHON", raising=False)


def read_python(path: Path, shard: tuple[int, int] | None) -> tuple[list, dict, tuple]:
    """Segments (and TooBigs), decode stats and capture info the Python way."""
    d = Decoder()
    d.shard = shard
    with open_capture(str(path)) as reader:
        got = [d.decode(f) for f in reader]
        info = reader.info
    d.finish()
    return ([g for g in got if g is not None], dataclasses.asdict(d.stats),
            (info.packets, info.first, info.last, info.problem))


def read_c(path: Path, shard: tuple[int, int] | None,
           ends: list[int] | None = None) -> tuple[list, dict, tuple]:
    """The same through CaptureReader.batches; ``ends`` gets each batch's last frame."""
    d = Decoder()
    d.shard = shard
    got = []
    with open_capture(str(path)) as reader:
        batches = reader.batches(d.fast_path(analyze_mod.SWEEP_EVERY))
        assert batches is not None
        for items, number, _time, decoded in batches:
            d.count_fast(decoded)
            if ends is not None:
                ends.append(number)
            for item in items:
                got.append(item if type(item) is Segment else d.decode(item))
        info = reader.info
    d.finish()
    return ([g for g in got if g is not None], dataclasses.asdict(d.stats),
            (info.packets, info.first, info.last, info.problem))


def assert_same(path: Path) -> None:
    for shard in (None, (0, 2), (1, 2), (2, 3)):
        py, c = read_python(path, shard), read_c(path, shard)
        assert c[1] == py[1], (path.name, shard)
        assert c[2] == py[2], (path.name, shard)
        assert c[0] == py[0], (path.name, shard)


NG_MAGIC = b"\x0a\x0d\x0d\x0a"


def sample_pcaps() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*.pcap") if p.read_bytes()[:4] != NG_MAGIC)


def sample_captures() -> list[Path]:
    """Every shipped capture, classic pcap or pcapng (by name, or by its first bytes)."""
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng")
                  or (p.is_file() and p.read_bytes()[:4] == NG_MAGIC))


@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: p.name)
def test_samples_read_the_same(path: Path) -> None:
    assert_same(path)


@pytest.mark.parametrize("path", sample_pcaps(), ids=lambda p: p.name)
def test_samples_as_pcapng_read_the_same(tmp_path: Path, path: Path) -> None:
    """Every sample rewritten as pcapng (as dumpcap would have written it), little-endian
    with microseconds and big-endian with nanoseconds (times that C must divide exactly)."""
    for endian, nano in (("<", False), (">", True)):
        ng = tmp_path / f"{path.stem}{endian}{nano}.pcapng"
        ng.write_bytes(ng_from_pcap(path.read_bytes(), endian, nano))
        assert_same(ng)


def tcp(sport: int = 40000, dport: int = 25, payload: bytes = b"EHLO x\r\n",
        **ip: object) -> Ether:
    return Ether() / IP(src="192.0.2.1", dst="198.51.100.2", **ip) / TCP(
        sport=sport, dport=dport, flags="PA", seq=1000, ack=2000) / payload


def corner_frames() -> list[bytes]:
    """One frame of each kind the fast path must take, refuse, or hand on."""
    plain = bytes(tcp())
    tso = bytearray(plain)
    tso[16:18] = b"\0\0"  # IP total length 0: TSO, the capture's length is trusted
    bad_doff = bytearray(plain)
    bad_doff[46] = 0x40  # data offset 16 bytes: not a TCP header
    long_doff = bytearray(plain)
    long_doff[46] = 0xF0  # data offset 60 bytes: longer than the datagram
    short_total = bytearray(plain)
    short_total[16:18] = struct.pack("!H", 30)  # total length shorter than the headers
    frames = [
        plain,
        bytes(tcp(payload=b"")),  # pure ACK
        plain + b"\0" * 20,  # Ethernet padding after the datagram
        bytes(tso), bytes(bad_doff), bytes(long_doff), bytes(short_total),
        plain[:60],  # snaplen cut inside the payload: missing bytes
        plain[:54],  # cut right after the TCP header
        plain[:40],  # cut inside the IP header
        bytes(tcp(options=b"\x01\x01\x01\x00")),  # IP options: the general path
        bytes(Ether() / Dot1Q(vlan=7) / IP(src="192.0.2.1", dst="198.51.100.2")
              / TCP(sport=40000, dport=25) / b"x"),
        bytes(Ether() / IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=53, dport=53)),
        bytes(Ether() / IP(src="198.51.100.9", dst="192.0.2.1") / ICMP(type=3, code=4,
                                                                        nexthopmtu=1400)
              / bytes(tcp())[14:62]),  # ICMP too-big quoting the connection
        bytes(Ether(type=0x86DD)) + b"\x60" + b"\0" * 60,  # IPv6 header, malformed
    ]
    frames += [bytes(Ether() / f) for f in fragment(
        IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=40000, dport=25, flags="PA")
        / (b"y" * 600), fragsize=256)]
    for sport in range(40001, 40041):  # many connections, both directions: shards
        frames.append(bytes(tcp(sport=sport)))
        frames.append(bytes(Ether() / IP(src="198.51.100.2", dst="192.0.2.1") / TCP(
            sport=25, dport=sport, flags="A", seq=5, ack=9)))
    return frames


@pytest.mark.parametrize("endian,magic", [("<", None), (">", None), ("<", MAGIC_NS)])
def test_corner_frames_read_the_same(tmp_path: Path, endian: str, magic: int | None) -> None:
    records = [(1_700_000_000 + i, 999_999 - i, f) for i, f in enumerate(corner_frames())]
    path = tmp_path / "corners.pcap"
    kw = {"magic": magic} if magic else {}
    path.write_bytes(pcap_file(records, endian=endian, **kw))
    assert_same(path)
    segments = read_c(path, None)[0]
    assert any(type(s) is Segment and s.missing for s in segments)  # the cut frame
    assert any(type(s) is packets.TooBig for s in segments)  # decoded by Python


def test_other_link_types_are_handed_on(tmp_path: Path) -> None:
    raw = [bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=1, dport=25) / b"hi")]
    path = tmp_path / "raw.pcap"
    path.write_bytes(pcap_file([(1, 0, f) for f in raw * 3], linktype=101))
    assert_same(path)
    assert len(read_c(path, None)[0]) == 3


def test_kuznetzov_records_and_gzip(tmp_path: Path) -> None:
    frames = corner_frames()
    body = b"".join(struct.pack("<IIII", 5, i, len(f), len(f)) + b"\0" * 8 + f
                    for i, f in enumerate(frames))
    path = tmp_path / "kuz.pcap"
    path.write_bytes(pcap_header(magic=0xA1B2CD34) + body)
    assert_same(path)
    zipped = tmp_path / "kuz.pcap.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert read_c(zipped, None) == read_python(path, None)


def test_records_across_read_chunks_and_sweep_boundaries(tmp_path: Path) -> None:
    """A file larger than several of the reader's 256 kB reads, with records of many
    sizes, so that records straddle the reads; batches end at every multiple of the
    sweep interval, which the pipeline relies on."""
    frames = [bytes(tcp(sport=40000 + i % 300, payload=b"z" * (i * 37 % 1400)))
              for i in range(5000)]
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_file([(10, i, f) for i, f in enumerate(frames)]))
    assert path.stat().st_size > 3 * 2**18
    assert_same(path)
    ends: list[int] = []
    read_c(path, (0, 2), ends)
    assert {2048, 4096} <= set(ends)
    assert ends[-1] == 5000 and ends == sorted(ends)


@pytest.mark.parametrize("cut", [24 + 10, 24 + 16 + 30, -1])
def test_cut_files_give_the_same_note(tmp_path: Path, cut: int) -> None:
    data = pcap_file([(1, 0, f) for f in corner_frames()[:6]])
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    assert_same(path)
    assert read_c(path, None)[2][3]  # the note says where it was cut


def test_oversized_record_gives_the_same_note(tmp_path: Path) -> None:
    good = pcap_record(1, 0, bytes(tcp()))
    bogus = struct.pack("<IIII", 2, 0, 900_000_000, 60) + b"\0" * 60
    path = tmp_path / "bogus.pcap"
    path.write_bytes(pcap_header() + good + bogus + good)
    assert_same(path)
    segments, _, (packets_read, _, _, problem) = read_c(path, None)
    assert packets_read == 1 and len(segments) == 1
    assert problem is not None and "900,000,000" in problem


def test_shard_hash_is_symmetric_and_spreads() -> None:
    a, b = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2])
    counts = [0, 0]
    for port in range(40000, 41000):
        assert shard_hash(a, b, port, 25) == shard_hash(b, a, 25, port)
        counts[shard_hash(a, b, port, 25) % 2] += 1
    assert min(counts) > 400  # both workers get a fair share of ephemeral ports


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_shard_hash_spreads_addresses_and_ports_rising_together(workers: int) -> None:
    """Clients whose address and port both count up (benchmarks/make_capture.py's; a
    scanner's or a load generator's): the old address ^ port hash cancelled them out and
    gave one of three workers 44 % of 7,204 connections.  Each worker's share stays
    within 5 % of the fair one."""
    server = bytes([198, 51, 100, 25])
    counts = [0] * workers
    for i in range(1, 7205):
        client = (0x0A000000 + i % 60000 + 1).to_bytes(4, "big")
        counts[shard_hash(client, server, 1024 + i % 60000, 25) % workers] += 1
    fair = 7204 / workers
    assert max(abs(c - fair) for c in counts) < 0.05 * fair, counts


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Decoder().fast_path(2048) is not None
    monkeypatch.setenv("PCAPSMTP_PURE_PYTHON", "1")
    assert Decoder().fast_path(2048) is None


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_analysis_is_the_same_with_and_without_it(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, jobs: int, ng: bool) -> None:
    path = str(SAMPLES / "tls-client-silent.pcap")
    if ng:
        path = str(tmp_path / "tls-client-silent.pcapng")
        Path(path).write_bytes(ng_from_pcap((SAMPLES / "tls-client-silent.pcap").read_bytes()))
    fast = render_json(analyze_mod.analyze(path, jobs=jobs))
    monkeypatch.setenv("PCAPSMTP_PURE_PYTHON", "1")
    pure = render_json(analyze_mod.analyze(path, jobs=jobs))
    assert fast == pure
    assert '"frame"' in fast


# ---- pcapng ------------------------------------------------------------------------------


def raw_ip(sport: int = 1) -> bytes:
    """A frame for LINKTYPE_RAW (101): the fast path must leave it to Python."""
    return bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=sport, dport=25) / b"hi")


def multi_section_pcapng() -> bytes:
    """Two sections in different byte orders, each with interfaces of different link
    types, resolutions (micro, nano, pico, 2**-n, and 10**19, which only Python divides)
    and offsets; simple, obsolete, statistics and unknown blocks between the packets."""
    eth = corner_frames()
    out = [ng_shb("<"), ng_idb(1, 65535), ng_idb(1, 0, tsresol=9),
           ng_idb(101, 0, tsresol=0x80 | 20, tsoffset=1_600_000_000),
           ng_block(0x0BAD, b"a custom block")]
    for i, f in enumerate(eth):
        out.append(ng_epb(i % 2, (1_700_000_000 * 10**6 + i) * (1000 if i % 2 else 1), f))
        if i % 7 == 0:
            out.append(ng_epb(2, (1 << 52) + i * 12345, raw_ip(i)))
        if i % 11 == 0:
            out += [ng_spb(f), ng_pb(1, 1_700_000_001 * 10**9 + i, f),
                    ng_block(5, struct.pack("<IIIHH", 0, 1, 2, 0, 0))]  # interface statistics
    out += [ng_shb(">"), ng_idb(1, 0, tsresol=0x80 | 30, tsoffset=-86400, endian=">"),
            ng_idb(1, 0, tsresol=12, tsoffset=1_690_000_000, endian=">"),
            ng_idb(1, 0, tsresol=19, tsoffset=1_000_000_000, endian=">"),
            ng_idb(101, 96, endian=">")]
    for i, f in enumerate(eth):
        ticks = (i * 0x9E3779B97F4A7C15) % 2**64
        out.append(ng_epb(i % 3, ticks, f, endian=">"))
        if i % 5 == 0:
            out += [ng_spb(f, endian=">"), ng_epb(3, i, raw_ip(i), endian=">")]
    return b"".join(out)


def test_pcapng_sections_interfaces_and_blocks_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "multi.pcapng"
    path.write_bytes(multi_section_pcapng())
    assert_same(path)
    segments = read_c(path, None)[0]
    assert any(type(s) is packets.TooBig for s in segments)  # Python decoded some frames
    zipped = tmp_path / "multi.pcapng.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert read_c(zipped, None) == read_python(path, None)


def frame_times(path: Path, c: bool) -> list[str]:
    """Every frame's time to the last bit (float.hex), read by C or by Python."""
    with open_capture(str(path)) as reader:
        if not c:
            return [f.time.hex() for f in reader]
        batches = reader.batches(Decoder().fast_path(analyze_mod.SWEEP_EVERY))
        assert batches is not None
        return [item.time.hex() for items, *_ in batches for item in items]


def tick_values(tsresol: int) -> list[int]:
    """Random 1- to 64-bit ticks, and for a small decimal divisor 10**n the ticks whose
    quotient lies exactly halfway between two floats, and one tick either side (where a
    division that rounds twice, or a lost remainder, picks the wrong float)."""
    rng = random.Random(tsresol)
    ticks = [rng.getrandbits(rng.randint(1, 64)) for _ in range(3000)]
    ticks += [0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**63, 2**64 - 1]
    if not tsresol & 0x80 and 0 < tsresol < 5:
        for m in range(2**53 + 1, 2**53 + 400, 2):  # odd 54-bit quotients: ties
            tie = m * 5**tsresol
            ticks += [tie - 1, tie, tie + 1]
    return ticks


@pytest.mark.parametrize("tsresol", [0, 1, 2, 3, 4, 6, 9, 12, 15, 18, 19, 0x80 | 0,
                                     0x80 | 20, 0x80 | 64, 0x80 | 100])
def test_pcapng_times_are_bit_for_bit_pythons(tmp_path: Path, tsresol: int) -> None:
    """Python computes ticks / div with int / int (one correct rounding); C must get the
    same float, also where (double)ticks / (double)div would round twice."""
    ticks = tick_values(tsresol)
    div = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    if tsresol in (3, 9):  # the hazard is real: a naive division differs somewhere
        assert any(float(t) / float(div) != t / div for t in ticks)
    frame = bytes(tcp())
    for offset in (None, 1_700_000_001, 2**53 + 1, -(2**62) - 769):  # the last two round
        path = tmp_path / f"times{tsresol}.pcapng"
        path.write_bytes(ng_shb() + ng_idb(1, tsresol=tsresol, tsoffset=offset)
                         + b"".join(ng_epb(0, t, frame) for t in ticks))
        assert frame_times(path, c=True) == frame_times(path, c=False)


def test_pcapng_blocks_across_read_chunks_and_sweep_boundaries(tmp_path: Path) -> None:
    """Blocks straddling the reader's 256 kB reads, and batches ending at every multiple
    of the sweep interval: frame 2048 is an obsolete packet block and 4096 a simple one,
    which Python reads, 6144 an enhanced packet block, which C reads."""
    out = [ng_shb(), ng_idb(1, 0), ng_idb(1, 0, tsresol=9)]
    for i in range(1, 7001):
        f = bytes(tcp(sport=40000 + i % 300, payload=b"z" * (i * 37 % 1400)))
        if i == 2048 or (i % 101 == 0 and i != 6144):
            out.append(ng_pb(1, 1_700_000_000 * 10**9 + i, f))
        elif i == 4096 or (i % 97 == 0 and i != 6144):
            out.append(ng_spb(f))
        else:
            out.append(ng_epb(i % 2, (1_700_000_000 * 10**6 + i) * (1000 if i % 2 else 1), f))
        if i % 500 == 0:
            out.append(ng_block(0x0BAD, b"x" * 300))
    path = tmp_path / "big.pcapng"
    path.write_bytes(b"".join(out))
    assert path.stat().st_size > 3 * 2**18
    assert_same(path)
    ends: list[int] = []
    read_c(path, (0, 2), ends)
    assert {2048, 4096, 6144} <= set(ends)
    assert ends[-1] == 7000 and ends == sorted(ends)


def damaged_pcapngs() -> dict[str, bytes]:
    """A sound start, then one cut or corrupt block of each kind the reader notes."""
    frame = bytes(tcp())
    good = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, 10**15 + i, frame) for i in range(3))
    epb = ng_epb(0, 10**15 + 9, frame)
    mismatched = epb[:-4] + struct.pack("<I", len(epb) + 4)
    oversized, into_trailer = bytearray(epb), bytearray(epb)
    struct.pack_into("<I", oversized, 20, len(frame) + 8)  # caplen beyond the block
    struct.pack_into("<I", into_trailer, 20, len(epb) - 30)  # into the trailing length
    be = ng_shb(">") + ng_idb(1, endian=">") + ng_epb(0, 1, frame, endian=">")
    return {
        "header cut": good + epb[:7],
        "block cut": good + epb[:-9],
        "bad section magic": good + ng_block(0x0A0D0D0A, struct.pack("<IHHq", 7, 1, 0, -1)),
        "length below 12": good + struct.pack("<II", 6, 8) + epb[8:],
        "length not a multiple of 4": good + struct.pack("<II", 6, len(epb) + 2) + epb[8:],
        "length absurd": good + struct.pack("<II", 6, 300 << 20) + epb[8:],
        "mismatched lengths": good + mismatched + epb,
        "enhanced packet block too short": good + ng_block(6, b"\0" * 16) + epb,
        "packet block too short": good + ng_block(2, b"\0" * 16) + epb,
        "unknown interface": good + ng_epb(3, 5, frame) + epb,
        "caplen beyond the block": good + bytes(oversized) + epb,
        "caplen into the trailing length": good + bytes(into_trailer) + epb,
        "simple packet before any interface": good + ng_shb() + ng_spb(frame),
        "simple packet too short": good + ng_block(3, b"") + epb,
        "interface block too short": good + ng_block(1, b"\0" * 4) + epb,
        "cut in a big-endian section": good + be + be[:-3],
        "mismatched in a big-endian section": good + be[:-4] + b"\0\0\0\1",
    }


@pytest.mark.parametrize("name", list(damaged_pcapngs()))
def test_damaged_pcapng_gives_the_same_note(tmp_path: Path, name: str) -> None:
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(damaged_pcapngs()[name])
    assert_same(path)
    packets_read, _, _, problem = read_c(path, None)[2]
    assert problem is not None and packets_read >= 3, problem


def test_the_python_decoders_shard_answers_are_cached_within_a_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapsmtp import packets

    monkeypatch.setattr(packets, "_MINE_CACHE", 64)
    d = Decoder()
    d.shard = (1, 3)
    server = bytes([198, 51, 100, 25])
    for round_ in range(2):  # the second round asks again after the cache was emptied
        for port in range(40000, 40200):
            client = bytes([192, 0, 2, port % 7])
            want = shard_hash(client, server, port, 25) % 3 == 1
            assert d._mine(client, server, port, 25) is want
            assert d._mine(server, client, 25, port) is want
            assert len(d._mine_of) <= 64, round_


def _segments_built_as(cls: type) -> list:
    """The C reader's items for a sample, with ``cls`` given as the type to build."""
    d = Decoder()
    fast = d.fast_path(analyze_mod.SWEEP_EVERY)
    assert fast is not None
    module, (index, count, boundary, _segment, names) = fast
    with open_capture(str(SAMPLES / "plain-ok.pcap")) as reader:
        batches = reader.batches((module, (index, count, boundary, cls, names)))
        assert batches is not None
        return [item for items, *_ in batches for item in items if type(item) is cls]


def test_segments_written_slot_by_slot_equal_those_init_builds() -> None:
    """The C reader fills a Segment's slots itself (no __init__ call); a subclass or any
    other type is called instead, so that whatever its __init__ does is done."""
    built = _segments_built_as(Segment)
    assert built and all(s == Segment(*dataclasses.astuple(s)) for s in built)

    @dataclasses.dataclass(slots=True)
    class Checked(Segment):
        def __post_init__(self) -> None:
            self.seq += 1  # proves that __init__ ran

    @dataclasses.dataclass
    class NoSlots:
        frame: int
        time: float
        src: str
        sport: int
        dst: str
        dport: int
        seq: int
        ack: int
        flags: int
        window: int
        payload: bytes
        missing: int
        ip_version: int
        ip_id: int

    for cls in (Checked, NoSlots, Segment):  # and back: the offsets are learnt again
        again = _segments_built_as(cls)
        assert len(again) == len(built), cls
        fields = [dataclasses.astuple(x) for x in again]
        shift = 1 if cls is Checked else 0
        assert fields == [(*dataclasses.astuple(s)[:6], s.seq + shift,
                           *dataclasses.astuple(s)[7:]) for s in built], cls
