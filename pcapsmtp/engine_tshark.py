"""The second engine: Wireshark's tshark decodes the packets, our pipeline judges them.

INTERFACE:

    result = analyze(path, selection, keylog=None, progress=None)   # Analysis, engine "tshark"
    TsharkError                     # tshark missing or failed (a CaptureError: one line, exit 1)

Why a second engine: tshark knows every encapsulation Wireshark does (GRE, ERSPAN,
VXLAN, MPLS, Geneve, ...) and can decrypt TLS with a key-log file.  It only
*decodes*: per frame it hands over the innermost IP/TCP header fields and the TCP
payload, we build the same ``Segment`` objects the native decoder builds and feed
them to the same ``Pipeline`` (flows, reassembly, dissectors, rules, renderers).  So
the two engines can only differ in what reaches the Segment, and the engine test
compares exactly that.

Why subprocess and ``-T fields`` instead of pyshark: pyshark builds a Python object
per packet from tshark's JSON.  Measured on the first 5,000 packets of
benchmarks/out/bench-300000.pcap (2 shared cores): pyshark with ``use_json=True,
include_raw=True`` reading the same fields, 204 packets/s; this engine end to end
(tshark ``-T fields`` with desegmentation and analysis off, plus our pipeline and
rules), 1,450 packets/s; the native engine 4,000.  On the whole 301,391-packet file:
native 6,500 packets/s (46 s), this engine 2,900 packets/s (105 s).  pyshark adds
nothing we need on top of the fields, so we drive tshark directly.

Decryption (``keylog``): a second tshark pass with ``-o tls.keylog_file:FILE`` prints,
for every frame that completed a decrypted SMTP PDU, the PDU's bytes (``smtp_raw`` of
``-T json -x``).  Those bytes go through *our* SMTP dissector -- the same one that
reads plaintext -- so decrypted commands, replies, bodies and AUTH masking mean what
they mean in plaintext.  The events are marked ``tls=True``, ``fields["decrypted"]``
and "(decrypted)" in their text, and land in the session timeline before the rules
run, so a session that looked like an encrypted stall can turn out to be a 5xx.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dissectors import smtp
from pcapsmtp import rules
from pcapsmtp.analyze import SWEEP_EVERY, Analysis, Pipeline
from pcapsmtp.capture import CaptureError, CaptureInfo, open_capture
from pcapsmtp.dissect import describe
from pcapsmtp.flows import Selection
from pcapsmtp.packets import DecodeStats, Segment, TooBig
from pcapsmtp.timeline import Event, Session

MISSING = "--engine tshark needs tshark (apt install tshark)"
ENGINE = "tshark"

# Ports tshark already dissects as SMTP (plaintext/STARTTLS) and as SMTP over TLS.
_TSHARK_SMTP_PORTS = frozenset({25, 587})
_TSHARK_SMTPS_PORTS = frozenset({465})

# One row per frame.  Order matters: _row() unpacks it.
_FIELDS = ("frame.number", "frame.time_epoch", "frame.protocols", "ip.src", "ip.dst",
           "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw",
           "tcp.flags", "tcp.window_size_value", "tcp.len", "tcp.payload",
           # an ICMP too-big quoting TCP (tcp.seq: seq_raw stays empty inside ICMP)
           "icmp.type", "icmp.code", "icmp.mtu", "icmpv6.type", "icmpv6.mtu", "tcp.seq",
           "ip.id")

# The segment pass wants headers, not analysis: reassembly, sequence analysis and
# the dissectors above TCP are ours; turning tshark's off doubles its speed.
_FAST = ("-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE",
         "-o", "tcp.calculate_timestamps:FALSE", "-o", "tcp.relative_sequence_numbers:FALSE",
         "--disable-protocol", "smtp", "--disable-protocol", "tls",
         "--disable-protocol", "imf")


class TsharkError(CaptureError):
    """tshark is missing or could not read the capture.

    A CaptureError on purpose: the CLI already turns those into one line on stderr
    and exit status 1, which is what a missing tool or an unreadable file deserves.
    """


def find_tshark() -> str:
    """The tshark executable ($PCAPSMTP_TSHARK overrides PATH, for tests and odd installs)."""
    path = os.environ.get("PCAPSMTP_TSHARK") or shutil.which("tshark")
    if not path or not os.access(path, os.X_OK):
        raise TsharkError(MISSING)
    return path


def decode_as(selection: Selection) -> list[str]:
    """``-d`` options so tshark reads SMTP (and SMTP in TLS) on the ports we follow.

    Only decryption needs them: the segment pass does not dissect above TCP.
    """
    args: list[str] = []
    for port in sorted(selection.implicit_tls_ports - _TSHARK_SMTPS_PORTS):
        args += ["-d", f"tcp.port=={port},tls", "-d", f"tls.port=={port},smtp"]
    plain = selection.ports - selection.implicit_tls_ports - _TSHARK_SMTP_PORTS
    for port in sorted(plain):
        args += ["-d", f"tcp.port=={port},smtp"]
    return args


# ---- the segment pass ------------------------------------------------------------------


def _last(value: str) -> str:
    """The innermost of several occurrences: tshark lists them outer first."""
    return value.rsplit(",", 1)[-1]


def _innermost_ip(protocols: str) -> int:
    """4 or 6 for the IP header right below TCP; 0 when TCP sits inside ICMP (an error
    quoting a header, which the native decoder does not count as TCP either)."""
    layers = protocols.split(":")
    try:
        tcp = layers.index("tcp")
    except ValueError:
        return 0
    below = layers[:tcp]
    if "icmp" in below or "icmpv6" in below:
        return 0
    for name in reversed(below):
        if name == "ip":
            return 4
        if name == "ipv6":
            return 6
    return 0


def _too_big(frame: int, time: float, cols: list[str]) -> TooBig | None:
    """The row of an ICMP fragmentation-needed / ICMPv6 Packet Too Big quoting TCP as a
    TooBig, as the native decoder makes it: the router is the source of the IP header
    right above the ICMP, the quoted segment the IP/TCP inside it."""
    (protocols, ip_src, ip_dst, ip6_src, ip6_dst, sport, dport, icmp_type, icmp_code,
     icmp_mtu, icmp6_type, icmp6_mtu, tcp_seq) = (cols[i] for i in _TOO_BIG_COLUMNS)
    layers = protocols.split(":")
    if _last(icmp_type) == "3" and _last(icmp_code) == "4" and "icmp" in layers:
        version, icmp, ip, srcs, dsts, mtu = 4, "icmp", "ip", ip_src, ip_dst, icmp_mtu
    elif _last(icmp6_type) == "2" and "icmpv6" in layers:
        version, icmp, ip, srcs, dsts, mtu = 6, "icmpv6", "ipv6", ip6_src, ip6_dst, icmp6_mtu
    else:
        return None
    at = layers.index(icmp)
    outer = layers[:at].count(ip)  # the IP headers up to the ICMP's own
    quoted = layers[at + 1:at + 3] == [ip, "tcp"]
    src_list, dst_list = srcs.split(","), dsts.split(",")
    if not quoted or not sport or not tcp_seq or not 0 < outer < len(src_list) \
            or outer >= len(dst_list):
        return None
    return TooBig(frame, time, src_list[outer - 1], int(_last(mtu) or 0), src_list[outer],
                  int(_last(sport)), dst_list[outer], int(_last(dport)), int(_last(tcp_seq)),
                  version)


# Where _too_big's columns are in a row (see _FIELDS).
_TOO_BIG_COLUMNS = tuple(_FIELDS.index(name) for name in (
    "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
    "tcp.dstport", "icmp.type", "icmp.code", "icmp.mtu", "icmpv6.type", "icmpv6.mtu",
    "tcp.seq"))


_IP_ID = _FIELDS.index("ip.id")


def _row(line: str, stats: DecodeStats) -> tuple[int, float, Segment | TooBig | None]:
    """One tshark row -> (frame, time, Segment, TooBig or None), counting the frame in
    ``stats`` as the native decoder would."""
    cols = line.rstrip("\n").split("\t")
    (number, epoch, protocols, ip_src, ip_dst, ip6_src, ip6_dst, sport, dport, seq, ack,
     flags, window, tcp_len, payload) = cols[:15]
    frame, time = int(number), float(epoch)
    stats.frames += 1
    version = _innermost_ip(protocols) if sport else 0
    if not version:
        stats.non_tcp += 1
        msg = _too_big(frame, time, cols) if "icmp" in protocols else None
        if msg is not None:
            stats.too_big += 1
        return frame, time, msg
    src, dst = (ip_src, ip_dst) if version == 4 else (ip6_src, ip6_dst)
    data = bytes.fromhex(_last(payload).replace(":", "")) if payload else b""
    promised = int(_last(tcp_len) or 0)
    stats.tcp += 1
    ip_id = cols[_IP_ID] if version == 4 else ""
    seg = Segment(frame, time, _last(src), int(_last(sport)), _last(dst), int(_last(dport)),
                  int(_last(seq)), int(_last(ack)), int(_last(flags), 16) & 0xFF,
                  int(_last(window) or 0), data, max(0, promised - len(data)), version,
                  int(_last(ip_id), 16) if ip_id else -1)
    return frame, time, seg


def _run_lines(cmd: list[str]) -> Iterator[str]:
    """tshark's stdout line by line; a failure (bad file) becomes a TsharkError."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          encoding="utf-8", errors="replace", bufsize=1 << 16) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        yield from proc.stdout
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise TsharkError(_tshark_problem(err, cmd))


def _tshark_problem(stderr: str, cmd: list[str]) -> str:
    """tshark's own complaint, without its 'Running as root' chatter."""
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and not ln.startswith("Running as user")]
    return "tshark failed: " + ("; ".join(lines[:3]) or f"exit status, command {cmd[:4]}")


def segments(tshark: str, path: str,
             stats: DecodeStats) -> Iterator[tuple[int, float, Segment | TooBig | None]]:
    """Every frame of the capture as (frame, time, Segment, TooBig or None), in order."""
    cmd = [tshark, "-r", path, "-n", *_FAST, "-T", "fields", "-E", "separator=/t"]
    for name in _FIELDS:
        cmd += ["-e", name]
    for line in _run_lines(cmd):
        if line.strip():
            yield _row(line, stats)


# ---- the decryption pass ---------------------------------------------------------------


def decrypted_pdus(tshark: str, path: str, keylog: str | None,
                   selection: Selection) -> dict[int, list[bytes]]:
    """Frame number -> the decrypted SMTP PDUs tshark completed in that frame.

    ``-Y "tls and smtp"`` keeps the output to frames that carry decrypted SMTP
    (plaintext SMTP has no TLS layer), so the JSON stays small.  ``keylog`` None: the
    keys the capture embeds (pcapng decryption secrets), which tshark reads itself.
    """
    keys = ["-o", f"tls.keylog_file:{keylog}"] if keylog else []
    cmd = [tshark, "-r", path, "-n", *keys, *decode_as(selection),
           "-Y", "tls and smtp", "-T", "json", "-x", "--no-duplicate-keys", "-j", "frame smtp"]
    text = "".join(_run_lines(cmd))
    out: dict[int, list[bytes]] = {}
    for packet in json.loads(text) if text.strip() else []:
        layers = packet["_source"]["layers"]
        number = int(_as_list(layers["frame"])[0]["frame.number"])
        raws = layers.get("smtp_raw")
        if not raws:
            continue
        # one PDU: [hex, pos, len, mask, type]; several: a list of those
        chunks = raws if isinstance(raws[0], list) else [raws]
        out[number] = [bytes.fromhex(c[0]) for c in chunks]
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class _Stream:
    """Decrypted bytes of one direction, with the frame each chunk completed in."""

    offsets: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    size: int = 0

    def add(self, frame: int, time: float, data: bytes) -> int:
        """Append; return the stream offset of ``data[0]``."""
        start = self.size
        self.offsets.append(start)
        self.frames.append(frame)
        self.times.append(time)
        self.size += len(data)
        return start

    def where(self, offset: int) -> tuple[int, float]:
        i = max(0, bisect_right(self.offsets, offset) - 1)
        return self.frames[i], self.times[i]


def decrypted_events(session: Session,
                     chunks: Iterable[tuple[int, float, str, bytes]]) -> list[Event]:
    """Run our SMTP dissector over a session's decrypted bytes: timeline events.

    ``chunks`` are (frame, time, direction, bytes) in frame order.  After STARTTLS
    the client speaks first (no greeting is owed); on port 465 the server greets.
    """
    parser = smtp.SmtpParser(after_starttls=not session.implicit_tls)
    streams = {"C": _Stream(), "S": _Stream()}
    events: list[Event] = []
    for frame, time, direction, data in chunks:
        start = streams[direction].add(frame, time, data)
        events += _convert(parser.receive(direction, data, start), streams)
    for direction in ("C", "S"):
        if streams[direction].frames:
            events += _convert(parser.close(direction), streams)
    return events


def _convert(dissected: list[Any], streams: dict[str, _Stream]) -> list[Event]:
    """Dissector events -> timeline events at the frame that completed them."""
    out = []
    for ev in dissected:
        if isinstance(ev, smtp.TlsStart):
            continue  # STARTTLS inside TLS: nothing more we could decrypt anyway
        stream = streams[ev.direction]
        frame, time = stream.where(max(ev.start, ev.end - 1))
        first, _ = stream.where(ev.start)
        kind, text, fields = describe(ev)
        fields.update(decrypted=True, start=ev.start, end=ev.end)
        out.append(Event(time, frame, ev.direction, kind, f"(decrypted) {text}", tls=True,
                         first_frame=first if first != frame else None, fields=fields))
    return out


# ---- the pipeline ----------------------------------------------------------------------


Endpoints = tuple[str, int, str, int]


class TsharkPipeline(Pipeline):
    """The shared Pipeline, fed with Segments tshark decoded instead of raw frames.

    Decrypted PDUs are matched to connections by the Segment of the frame that
    carried them, and merged into the session before the rules run.
    """

    def __init__(self, selection: Selection, decrypted: dict[int, list[bytes]] | None = None,
                 on_session: Callable[[Session], None] | None = None) -> None:
        super().__init__(selection, on_session)
        self.decoder.stats = DecodeStats()  # filled by the segment pass, not by Decoder
        self.decrypted = decrypted or {}
        self._plain: dict[Endpoints, list[tuple[int, float, bytes]]] = {}

    def feed_segment(self, frame: int, time: float, seg: Segment | TooBig | None) -> None:
        """One decoded frame; the same bookkeeping as ``Pipeline.feed``."""
        self._frames += 1
        self.now = time
        if type(seg) is TooBig:
            self.table.add_too_big(seg)
        elif seg is not None:
            pdus = self.decrypted.get(frame)
            if pdus:
                key = (seg.src, seg.sport, seg.dst, seg.dport)
                self._plain.setdefault(key, []).extend((frame, time, p) for p in pdus)
            for old in self.table.add(seg):
                self._finish(old, end_of_capture=False)
        if self._frames % SWEEP_EVERY == 0:
            self.sweep()

    def _new_builder(self, client: tuple[str, int], server: tuple[str, int],
                     first: Any) -> Any:
        """The shared builder, whose ``finish`` also merges the decrypted SMTP, so the
        parent's ``_finish`` diagnoses the merged timeline (and keeps or hands it on as
        it does for the native engine)."""
        builder = super()._new_builder(client, server, first)
        finish = builder.finish

        def finish_decrypted(end_of_capture: bool) -> Session:
            session = finish(end_of_capture)
            self._merge_decrypted(session)
            return session

        builder.finish = finish_decrypted
        return builder

    def _merge_decrypted(self, session: Session) -> None:
        """Add the session's decrypted SMTP to its timeline, in wire (frame) order."""
        if not self._plain:
            return
        (c, cp), (s, sp) = session.client, session.server
        chunks = [(f, t, "C", d) for f, t, d in self._take((c, cp, s, sp), session)]
        chunks += [(f, t, "S", d) for f, t, d in self._take((s, sp, c, cp), session)]
        if not chunks:
            return
        chunks.sort(key=lambda ch: ch[0])
        extra = decrypted_events(session, chunks)
        # stable sort: a decrypted command follows the tls-app-data record that carried it
        session.events = sorted(session.events + extra, key=lambda e: e.frame)

    def _take(self, key: Endpoints, session: Session) -> list[tuple[int, float, bytes]]:
        """This session's chunks of one direction (a reused port pair keeps the rest)."""
        mine, rest = [], []
        for ch in self._plain.pop(key, []):
            (mine if session.first_frame <= ch[0] <= session.last_frame else rest).append(ch)
        if rest:
            self._plain[key] = rest
        return mine


# ---- entry point -----------------------------------------------------------------------


def analyze(path: str, selection: Selection | None = None, keylog: str | None = None,
            progress: Callable[[int], None] | None = None) -> Analysis:
    """Read a whole capture through tshark and diagnose every SMTP session in it."""
    selection = selection or Selection()
    tshark = find_tshark()
    if keylog is not None and not os.path.isfile(keylog):
        raise TsharkError(f"key-log file not found: {keylog}")
    with _on_disk(path) as file:
        info = _capture_info(file, path)
        decrypted = decrypted_pdus(tshark, file, keylog, selection) \
            if keylog or info.tls_keys else {}
        pipeline = TsharkPipeline(selection, decrypted)
        stats = pipeline.decoder.stats
        for n, (frame, time, seg) in enumerate(segments(tshark, file, stats), 1):
            pipeline.feed_segment(frame, time, seg)
            _extend(info, time)
            if progress is not None and not n & 0xFFFF:
                progress(n)
    sessions = pipeline.close()
    result = Analysis(capture=info, decode=stats, selection=selection, sessions=sessions,
                      engine=ENGINE)
    result.findings = rules.diagnose_capture(sessions)
    return result


def _extend(info: CaptureInfo, time: float) -> None:
    info.packets += 1
    info.first = time if info.first is None else min(info.first, time)
    info.last = time if info.last is None else max(info.last, time)


def _capture_info(file: str, shown: str) -> CaptureInfo:
    """Format, link types and snaplen from the file header (our reader knows pcap and
    pcapng); packets and times are counted from tshark's rows.  A format only tshark
    reads (snoop, ERF, ...) keeps the defaults."""
    info = CaptureInfo(file=shown)
    try:
        with open_capture(file) as reader:
            head = reader.info
            info.format, info.compressed = head.format, head.compressed
            for frame in reader:  # pcapng declares link types per interface: a few frames
                if len(head.linktypes) or frame.number > 16:
                    break
            info.linktypes = list(head.linktypes)
            info.snaplen = head.snaplen  # pcapng: from the interface blocks just read
            info.tls_keys = head.tls_keys  # secrets blocks precede the packets they decrypt
    except CaptureError:
        info.format = "other"
    return info


class _on_disk:
    """The capture as a file tshark can read twice: standard input is spooled to a
    temporary file first (tshark's two passes and our header read each need it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp: str | None = None

    def __enter__(self) -> str:
        if self.path != "-":
            if not os.path.exists(self.path):
                raise TsharkError(f"no such file: {self.path}")
            return self.path
        fd, self._tmp = tempfile.mkstemp(prefix="pcapsmtp-", suffix=".pcap")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        return self._tmp

    def __exit__(self, *exc: object) -> None:
        if self._tmp:
            os.unlink(self._tmp)
