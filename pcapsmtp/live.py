"""Live mode: ``sudo pcapsmtp live -i eth0`` on the MX while the problem happens.

How it is built, and why:

- **Capture**: tcpdump runs as a child (``-U --immediate-mode -s 0 -w -``) and its pcap
  stream is read by the same ``CaptureReader`` that reads files, so live verdicts and
  ``pcapsmtp analyze`` of the written capture come from identical code.  Without
  tcpdump, scapy's ``AsyncSniffer`` is the fallback (slower, but needs no binary).
- **Never blocking forever**: a reader thread turns the stream into frames and puts
  them on a bounded queue; the main thread takes them with a short timeout, so idle
  sessions are swept and the status line refreshed even when no packet arrives.  The
  queue bound is the back-pressure: when analysis falls behind, tcpdump's pipe fills
  and the kernel drops (tcpdump counts those drops; the summary shows them).
- **Clock**: the pipeline's clock is capture time; with no traffic it is advanced to
  the wall clock (tcpdump stamps packets with it) before each sweep.
- **Memory**: a finished session is printed, counted and dropped; only the last
  ``--keep-failed`` failed sessions are kept for the final report.
- **--write**: the frames read are written back out as pcap by this process (a tee),
  not by tcpdump: tcpdump cannot rotate (``-C``/``-W``) while writing to stdout.
  Writing whole frames means every file starts at a record boundary with its own pcap
  header, so each rotated file opens on its own.  The first file is FILE itself, then
  FILE's stem ``.1``, ``.2`` ... (``x.pcap``, ``x.1.pcap``); beyond ``--write-files``
  the oldest is deleted.  Frame numbers in the report count from the start of the run:
  they match ``pcapsmtp analyze FILE`` as long as FILE was not rotated away (the summary
  lists which frames each file holds).
- **Stopping**: SIGINT/SIGTERM, ``--duration`` or ``--count`` stop tcpdump (SIGTERM,
  bounded wait, SIGKILL), read what it flushed, finish every session, print the
  summary and the full report of the failed sessions.  tcpdump runs in its own
  process group (a terminal's Ctrl-C reaches only us, so the stop is orderly) and
  with a parent-death signal (if we are killed, it does not linger).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from pcapsmtp.capture import CaptureError, CaptureReader, Frame
from pcapsmtp.flows import DEFAULT_PORTS, Selection
from pcapsmtp.timeline import Session, endpoint

WIDTH = 100
TICK = 0.2  # longest the main loop waits for a frame before sweeping / checking stops
SWEEP_EVERY = 0.5  # seconds (wall) between idle sweeps
STATUS_EVERY = 1.0  # seconds between status-line refreshes
QUEUE_FRAMES = 20_000  # frames in flight between the reader thread and the pipeline
STOP_WAIT = 5.0  # how long tcpdump gets to exit after SIGTERM, then SIGKILL
DRAIN_WAIT = 10.0  # how long we read what tcpdump flushed after stopping it
START_WAIT = 10.0  # how long tcpdump gets to write its pcap header (or fail)
SNAPLEN = 262144  # what tcpdump -s 0 means
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # not in a normal user's PATH on Debian

PRIVILEGE_HINT = ("capturing needs root or CAP_NET_RAW: run with sudo, or "
                  "`sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)`")
INSTALL_HINT = "tcpdump not found: install it (apt install tcpdump)"
CAP_NET_RAW = 13

_END = object()  # the reader thread's end-of-stream marker on the queue


class LiveError(Exception):
    """Capturing cannot start or went wrong; the message is one line for the user."""


# ----------------------------------------------------------------------------- building


# Non-first IPv4 fragments of TCP, and every IPv6 packet whose first extension header
# is a fragment header (next header 44).
FRAGMENTS = "(ip proto 6 and ip[6:2] & 0x1fff != 0) or (ip6 and ip6[6] == 44)"
# ICMP "fragmentation needed" (type 3 code 4) and ICMPv6 "Packet Too Big" (type 2, right
# after the fixed header): the proof of a path MTU problem.  They are about a connection
# but carry its ports only inside the quoted packet, where ``port 25`` does not look.
TOO_BIG = "(icmp[0] == 3 and icmp[1] == 4) or (icmp6 and ip6[40] == 2)"


def build_filter(ports: frozenset[int], any_port: bool = False,
                 user_filter: str | None = None) -> str:
    """The BPF filter handed to tcpdump: the user's, or TCP on the followed ports.

    The VLAN branch matters on trunk ports, where tagged frames never match a plain
    ``tcp port 25``; with --any-port every TCP packet is needed to find banners.
    Fragments are let through whatever their ports: an IPv4 fragment after the first
    carries no TCP header for ``port 25`` to match, and libpcap's ``tcp`` does not look
    past an IPv6 fragment header -- without them the reassembly sees a gap where a
    middlebox or a small MTU split a segment (rare enough to cost nothing).  So are ICMP
    too-big messages, whatever connection they quote (as rare): the rules need them to
    tell a host that ignores them from a path that drops them."""
    if user_filter is not None and user_filter.strip():
        return user_filter.strip()
    if any_port:
        tcp = "tcp"
    else:
        tcp = "tcp and (" + " or ".join(f"port {p}" for p in sorted(ports)) + ")"
    base = f"({tcp}) or {FRAGMENTS} or {TOO_BIG}"
    return f"{base} or (vlan and ({base}))"


def find_tcpdump(explicit: str | None = None) -> str | None:
    """tcpdump's path: the one given, else PATH, else the sbin directories that a
    non-root user's PATH lacks (so the error says 'permission', not 'install')."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("tcpdump")
    if found:
        return found
    return shutil.which("tcpdump", path=os.pathsep.join(SBIN))


def tcpdump_command(tcpdump: str, iface: str, bpf: str) -> list[str]:
    """Full snaplen, packet-buffered pcap on stdout, no name lookups.

    ``--immediate-mode``: without it TPACKET_V3 hands packets over in blocks, late;
    ``-Z root``: Debian's tcpdump otherwise drops to its own user, harmless for stdout
    but it then cannot re-open anything; we write files ourselves anyway."""
    return [tcpdump, "-i", iface, "-s", "0", "-U", "--immediate-mode", "-n", "-Z", "root",
            "-w", "-", bpf]


def has_capture_privilege(status_path: str = "/proc/self/status") -> bool:
    """Root, or CAP_NET_RAW in our effective set (what scapy's raw socket needs)."""
    if os.geteuid() == 0:
        return True
    try:
        with open(status_path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def interface_exists(iface: str, sys_net: str = "/sys/class/net") -> bool:
    """Checked before scapy opens it: scapy's own error for a bad name is obscure."""
    return iface == "any" or os.path.isdir(os.path.join(sys_net, iface))


def explain_tcpdump_error(stderr: str, iface: str, bpf: str) -> str:
    """tcpdump's stderr turned into one line that says what to do."""
    text = stderr.lower()
    if "permission" in text or "operation not permitted" in text:
        return PRIVILEGE_HINT
    if "no such device" in text or "doesn't exist" in text or "no such interface" in text:
        return f"no such interface {iface!r}; list them with `ip link` or use -i any"
    if "not up" in text:
        return (f"interface {iface!r} is down; bring it up (`ip link set {iface} up`) "
                "or use -i any")
    if "filter" in text or "syntax error" in text:
        why = _last_line(stderr).removeprefix("tcpdump: ")
        return f"tcpdump rejects the filter {bpf!r} ({why}); see `man pcap-filter`"
    last = _last_line(stderr) or "no message"
    return f"tcpdump failed: {last.removeprefix('tcpdump: ')}"


def _last_line(text: str) -> str:
    """The most telling line of an error output: the last 'tcpdump:' line, else the last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tagged = [ln for ln in lines if ln.startswith("tcpdump:") and "listening on" not in ln]
    return (tagged or lines or [""])[-1]


def kernel_drops(stderr: str) -> int | None:
    """'N packets dropped by kernel' from tcpdump's exit statistics."""
    m = re.search(r"(\d+) packets? dropped by kernel", stderr)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- writing


def rotated_name(path: str, index: int) -> str:
    """x.pcap, x.1.pcap, x.2.pcap ...: the first file is exactly what the user named."""
    if index == 0:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{index}{p.suffix}"))


def pcap_header(linktype: int, snaplen: int = SNAPLEN) -> bytes:
    """Little-endian microsecond pcap global header (what tcpdump -w writes)."""
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(frame: Frame) -> bytes:
    """One record; microseconds recovered exactly from the float time (< 2**53 µs)."""
    sec, usec = divmod(round(frame.time * 1_000_000), 1_000_000)
    return struct.pack("<IIII", sec, usec, len(frame.data), frame.origlen) + frame.data


@dataclass
class WrittenFile:
    path: str
    first_frame: int
    last_frame: int = 0
    size: int = 0


class RotatingWriter:
    """Writes frames as pcap, starting a new file (with its own header) past
    ``max_bytes`` and deleting the oldest beyond ``max_files``.

    A file always holds at least one frame, so a frame bigger than ``max_bytes`` is
    still written.  A change of link type also starts a new file: a pcap file has one."""

    def __init__(self, path: str, max_bytes: int, max_files: int, snaplen: int = SNAPLEN,
                 opener: Callable[[str], IO[bytes]] | None = None,
                 remover: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.max_files = max(1, max_files)
        self.snaplen = snaplen
        self._open = opener or (lambda p: open(p, "wb"))  # noqa: SIM115 - closed in rotate/close
        self._remove = remover or _remove_quietly
        self.files: deque[WrittenFile] = deque()
        self.deleted = 0
        self._fh: IO[bytes] | None = None
        self._linktype: int | None = None
        self._index = 0

    def write(self, frame: Frame) -> None:
        record = pcap_record(frame)
        cur = self.files[-1] if self.files else None
        if (cur is None or frame.linktype != self._linktype
                or (cur.last_frame and cur.size + len(record) > self.max_bytes)):
            self._start(frame)
            cur = self.files[-1]
        assert self._fh is not None
        self._fh.write(record)
        cur.size += len(record)
        cur.last_frame = frame.number

    def _start(self, frame: Frame) -> None:
        """Close the current file, open the next (header first), enforce the cap."""
        self._close_current()
        name = rotated_name(self.path, self._index)
        self._index += 1
        self._fh = self._open(name)
        header = pcap_header(frame.linktype, self.snaplen)
        self._fh.write(header)
        self._linktype = frame.linktype
        self.files.append(WrittenFile(name, frame.number, size=len(header)))
        while len(self.files) > self.max_files:
            self._remove(self.files.popleft().path)
            self.deleted += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        self._close_current()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# ----------------------------------------------------------------------------- sources


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Own process group (a terminal's Ctrl-C is ours to handle) and die with us."""
    os.setpgid(0, 0)
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _put(q: queue.Queue[Any], item: Any, halt: threading.Event) -> bool:
    """Bounded put that gives up when the consumer is gone (never blocks forever)."""
    while not halt.is_set():
        try:
            q.put(item, timeout=TICK)
            return True
        except queue.Full:
            continue
    return False


class TcpdumpSource:
    """tcpdump as a child; frames on ``queue``; ``_END`` (or a CaptureError) at the end."""

    name = "tcpdump"

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: CaptureReader | None = None
        self.started = threading.Event()  # the pcap header was read
        self.halt = threading.Event()
        self._stderr: deque[str] = deque(maxlen=50)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start tcpdump and wait (bounded) for its pcap header, or raise LiveError."""
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         preexec_fn=_child_setup)  # noqa: PLW1509
        except OSError as exc:
            raise LiveError(f"cannot run {self.cmd[0]}: {exc.strerror or exc}") from None
        for target in (self._drain_stderr, self._read_frames):
            t = threading.Thread(target=target, daemon=True, name=f"pcapsmtp-{target.__name__}")
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + START_WAIT
        while not self.started.is_set() and time.monotonic() < deadline:
            if self.proc.poll() is not None and not self._threads[1].is_alive():
                break
            self.started.wait(TICK)
        if not self.started.is_set():
            self.stop()
            raise LiveError(explain_tcpdump_error(self.stderr(), self.cmd[2], self.cmd[-1]))

    def _drain_stderr(self) -> None:
        """Keep tcpdump's stderr flowing (a full pipe would stall it); remember the end."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _read_frames(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            self.reader = CaptureReader("tcpdump", self.proc.stdout)
            self.started.set()
            for frame in self.reader:
                if not _put(self.queue, frame, self.halt):
                    return
        except CaptureError as exc:
            if self.started.is_set():
                _put(self.queue, exc, self.halt)
            return
        _put(self.queue, _END, self.halt)

    def stderr(self) -> str:
        """What tcpdump said so far (waits briefly for the drain thread at exit)."""
        if self.proc is not None and self.proc.poll() is not None:
            self._threads[0].join(timeout=1.0)
        return "\n".join(self._stderr)

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL: tcpdump never outlives us."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_WAIT)

    def close(self) -> None:
        """After the queue is drained: let the threads go and close the pipes."""
        self.stop()
        self.halt.set()
        for t in self._threads:
            t.join(timeout=1.0)
        if self.proc is not None:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def exited_on_its_own(self) -> str | None:
        """Why tcpdump stopped when we did not stop it (interface gone, ...), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return explain_tcpdump_error(self.stderr(), self.cmd[2], self.cmd[-1])


def scapy_frame(packet: Any, number: int) -> Frame:
    """A scapy packet as the raw Frame the pipeline wants (link type from its class)."""
    from scapy.config import conf

    data = bytes(packet)
    linktype = conf.l2types.layer2num.get(type(packet), 1)
    return Frame(number, float(packet.time), linktype, len(data),
                 getattr(packet, "wirelen", None) or len(data), data)


class ScapySource:
    """scapy's AsyncSniffer, for hosts without tcpdump; same queue protocol."""

    name = "scapy"

    def __init__(self, iface: str, bpf: str) -> None:
        self.iface = iface
        self.bpf = bpf
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
        self.halt = threading.Event()
        self.sniffer: Any = None
        self.reader = None
        self._n = 0

    def _on_packet(self, packet: Any) -> None:
        self._n += 1
        _put(self.queue, scapy_frame(packet, self._n), self.halt)

    def start(self) -> None:
        """Start sniffing; a filter libpcap cannot compile falls back to Python filtering."""
        from scapy.sendrecv import AsyncSniffer

        iface = None if self.iface == "any" else self.iface
        for bpf in (self.bpf, None):
            self.sniffer = AsyncSniffer(iface=iface, filter=bpf, prn=self._on_packet,
                                        store=False)
            self.sniffer.start()
            time.sleep(0.5)  # the socket opens in the thread; let a failure show
            if self.sniffer.running and self.sniffer.thread.is_alive():
                return
            exc = getattr(self.sniffer, "exception", None)
            if isinstance(exc, PermissionError):
                raise LiveError(PRIVILEGE_HINT)
        raise LiveError(f"scapy cannot capture on {self.iface!r}: "
                        f"{getattr(self.sniffer, 'exception', None)}; {INSTALL_HINT}")

    def stop(self) -> None:
        if self.sniffer is not None and self.sniffer.running:
            with contextlib.suppress(Exception):
                self.sniffer.stop(join=False)
            self.sniffer.thread.join(timeout=STOP_WAIT)
        _put(self.queue, _END, threading.Event())

    def close(self) -> None:
        self.stop()
        self.halt.set()

    def stderr(self) -> str:
        return ""

    def exited_on_its_own(self) -> str | None:
        if self.sniffer is not None and not self.sniffer.thread.is_alive() \
                and not self.halt.is_set() and self.sniffer.exception is not None:
            return f"scapy stopped capturing: {self.sniffer.exception}"
        return None


def open_source(iface: str, bpf: str, tcpdump: str | None) -> TcpdumpSource | ScapySource:
    """tcpdump when present; else scapy when importable and permitted; else say what to do."""
    if tcpdump:
        return TcpdumpSource(tcpdump_command(tcpdump, iface, bpf))
    try:
        import scapy.sendrecv  # noqa: F401
    except ImportError:
        raise LiveError(INSTALL_HINT) from None
    if not has_capture_privilege():
        raise LiveError(f"{INSTALL_HINT}; {PRIVILEGE_HINT}")
    if not interface_exists(iface):
        raise LiveError(f"no such interface {iface!r}; list them with `ip link` or use -i any")
    return ScapySource(iface, bpf)


# ----------------------------------------------------------------------------- reporting


def _code(session: Session) -> str:
    return getattr(session.verdict, "code", None) or "-"


def is_failure(session: Session) -> bool:
    return not _code(session).startswith("ok")


def clock(ts: float) -> str:
    """Local wall-clock time: the operator compares it with the MTA's log lines."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def session_line(session: Session, why: str = "", width: int | None = WIDTH) -> str:
    """'HH:MM:SS  #3  client → server  1.2s  verdict  reason', at most ``width`` columns.

    ``width`` None: the whole line -- for a file or a pipe, where a cut line would lose the
    reason for nothing (the cut is for a terminal only).
    ``why`` says a session was reported before it ended (idle, or live mode stopped)."""
    reason = " ".join(str(getattr(session.verdict, "summary", "") or "").split())
    if why:
        reason = f"[{why}] {reason}"
    dur = session.last_time - session.first_time
    line = (f"{clock(session.last_time)}  #{session.id}  {endpoint(session.client)} → "
            f"{endpoint(session.server)}  {dur:.1f}s  {_code(session)}  {reason}").rstrip()
    return line if width is None or len(line) <= width else line[: width - 3] + "..."


def status_line(packets: int, open_: int, counts: Counter[str], width: int = WIDTH) -> str:
    """The one-line status kept on a terminal's stderr."""
    tally = ", ".join(f"{c} {n}" for c, n in counts.most_common())
    line = (f"pcapsmtp live: {packets:,} packets, {open_} open, "
            f"{sum(counts.values())} finished" + (f" ({tally})" if tally else ""))
    return line if len(line) <= width else line[: width - 3] + "..."


@dataclass
class Options:
    iface: str
    selection: Selection
    bpf: str
    idle: float
    duration: float | None = None
    count: int | None = None
    write: str | None = None
    write_bytes: int = 100 << 20
    write_files: int = 10
    keep_failed: int = 100


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    failed: deque[Session] = field(default_factory=deque)
    failed_dropped: int = 0


class LiveRun:
    """One live capture: the loop, the stops, the report."""

    def __init__(self, opts: Options, source: Any, out: IO[str] | None = None,
                 err: IO[str] | None = None) -> None:
        from pcapsmtp.analyze import Pipeline

        self.opts = opts
        self.source = source
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.tty = bool(getattr(self.err, "isatty", lambda: False)())
        # verdict lines are cut to the width only where stdout is a terminal
        self.out_tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.pipeline = Pipeline(opts.selection, on_session=self._on_session)
        self.tally = Tally(failed=deque(maxlen=max(1, opts.keep_failed)))
        self.writer = (RotatingWriter(opts.write, opts.write_bytes, opts.write_files)
                       if opts.write else None)
        self.stop_reason: str | None = None
        self.packets = 0
        self.started = time.time()
        self._why = ""  # why sessions finishing now end early ("idle", "stopped")
        self._error: str | None = None  # why the capture ended by itself
        self._status_shown = False

    # -- sessions out
    def _on_session(self, session: Session) -> None:
        """Print, count, keep if failed (bounded), and drop from the pipeline."""
        self.pipeline.finished.clear()
        why = self._why if session.open_at_end else ""
        width = shutil.get_terminal_size((WIDTH, 24)).columns - 1 if self.out_tty else None
        self._print(session_line(session, why, width))
        self.tally.counts[_code(session)] += 1
        if is_failure(session):
            if len(self.tally.failed) == self.tally.failed.maxlen:
                self.tally.failed_dropped += 1
            self.tally.failed.append(session)
        if self.opts.count and sum(self.tally.counts.values()) >= self.opts.count:
            self.stop_reason = self.stop_reason or f"--count {self.opts.count} reached"

    def _print(self, line: str) -> None:
        self._clear_status()
        self.out.write(line + "\n")
        self.out.flush()

    def _clear_status(self) -> None:
        if self._status_shown:
            self.err.write("\r\033[K")
            self.err.flush()
            self._status_shown = False

    def _status(self) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((WIDTH, 24)).columns - 1
        line = status_line(self.packets, len(self.pipeline.table.active), self.tally.counts,
                           width)
        self.err.write("\r" + line + "\033[K")
        self.err.flush()
        self._status_shown = True

    # -- frames in
    def _take(self, item: Any) -> bool:
        """One item off the queue; False at the end of the stream."""
        if item is _END:
            return False
        if isinstance(item, CaptureError):
            self._error = str(item)
            return False
        if self.writer is not None:
            self.writer.write(item)
        self.packets += 1
        self.pipeline.feed(item)
        return True

    def _sweep(self) -> None:
        """Report idle sessions.  Once every frame that came is processed, the clock is
        advanced to now (no packet may have come for a while); before that, capture time
        rules, so a backlog never makes its own sessions look idle."""
        if self.source.queue.empty():
            self.pipeline.now = max(self.pipeline.now, time.time())
        self._why = f"idle {self.opts.idle:g}s"
        self.pipeline.sweep(idle=self.opts.idle)
        self._why = ""

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def run(self) -> int:
        """Capture until a stop; then finish and report.  The exit status."""
        deadline = (time.monotonic() + self.opts.duration) if self.opts.duration else None
        next_sweep = next_status = time.monotonic()
        ended = False
        while self.stop_reason is None:
            try:
                ended = not self._take(self.source.queue.get(timeout=TICK))
            except queue.Empty:
                if self.writer is not None:
                    self.writer.flush()
            now = time.monotonic()
            if ended:
                self._error = self._error or self.source.exited_on_its_own() \
                    or f"{self.source.name} stopped"
                break
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + SWEEP_EVERY
            if now >= next_status:
                self._status()
                next_status = now + STATUS_EVERY
            if deadline is not None and now >= deadline:
                self.request_stop(f"--duration {self.opts.duration:g}s reached")
        self._finish(drain=not ended)
        return 1 if self._error else 0

    def _finish(self, drain: bool) -> None:
        """Stop the source, read what it flushed, finish all sessions, print the report."""
        self.source.stop()
        if drain:
            limit = time.monotonic() + DRAIN_WAIT
            while time.monotonic() < limit:
                try:
                    if not self._take(self.source.queue.get(timeout=TICK)):
                        break
                except queue.Empty:
                    continue
        stderr = self.source.stderr()
        self.source.close()
        if self.writer is not None:
            self.writer.close()
        self._why = "open at stop"
        self.pipeline.close()
        self._clear_status()
        for line in self.summary(stderr):
            self.out.write(line + "\n")
        self.out.flush()

    def summary(self, stderr: str = "") -> list[str]:
        """The end-of-run report: facts, tally, written files, failed sessions in full."""
        from pcapsmtp.render.common import utc
        from pcapsmtp.render.text import session_block

        t = self.tally
        total = sum(t.counts.values())
        now = time.time()
        lines = ["", f"pcapsmtp live summary: {self.opts.iface}, {self.source.name}"]
        lines += textwrap.wrap(f"filter: {self.opts.bpf}", WIDTH, subsequent_indent="  ")
        lines.append(f"from {utc(self.started)} to {utc(now)} UTC "
                     f"({now - self.started:.1f} s), {self.packets:,} packets")
        lines += textwrap.wrap(f"stopped: {self.stop_reason or self._error}", WIDTH,
                               subsequent_indent="  ")
        drops = kernel_drops(stderr)
        if drops:
            lines.append(f"WARNING: the kernel dropped {drops:,} packets: verdicts may be wrong")
        tally = ", ".join(f"{c} {n}" for c, n in t.counts.most_common())
        lines.append(f"sessions: {total}" + (f"  ({tally})" if tally else ""))
        if self.writer is not None:
            for f in self.writer.files:
                lines.append(f"written: {f.path} (frames {f.first_frame}-{f.last_frame})")
            if self.writer.deleted:
                lines.append(f"({self.writer.deleted} older files deleted, --write-files "
                             f"{self.writer.max_files})")
        failed = [s for s in t.failed]
        if failed:
            lines += ["", f"failed sessions: {total - t.counts['ok'] - t.counts['ok-no-mail']}"
                          + (f" (the oldest {t.failed_dropped} not kept, --keep-failed)"
                             if t.failed_dropped else "")]
            for session in failed:
                lines.append("")
                lines.extend(session_block(session))
        if self._error:
            lines += ["", f"capture ended: {self._error}"]
        return lines


# ----------------------------------------------------------------------------- command


def _fail(message: str) -> None:
    click.echo(f"pcapsmtp: error: {message}", err=True)
    sys.exit(1)


def _selection(ports: tuple[str, ...], tls_ports: tuple[str, ...],
               any_port: bool) -> Selection:
    from pcapsmtp.cli import _ports  # lazy: cli imports this module

    implicit = _ports(tls_ports) | {465}
    return Selection(ports=frozenset(DEFAULT_PORTS | _ports(ports) | implicit),
                     implicit_tls_ports=frozenset(implicit), any_port=any_port)


def _install_signals(run: LiveRun) -> None:
    """SIGINT/SIGTERM only ask for an orderly stop: the loop notices within TICK."""
    def handler(signum: int, _frame: Any) -> None:
        run.request_stop(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.option("-i", "--interface", "iface", required=True, metavar="IFACE",
              help="Interface to capture on ('any' for all; `ip link` lists them).")
@click.option("-p", "--port", "ports", multiple=True, metavar="PORT[,PORT]",
              help="Also follow these TCP ports (25, 465 and 587 always are).")
@click.option("--tls-port", "tls_ports", multiple=True, metavar="PORT[,PORT]",
              help="Ports that speak TLS from the first byte, like 465.")
@click.option("--any-port", is_flag=True, help="Find SMTP on any port by its 220 greeting.")
@click.option("--filter", "user_filter", metavar="BPF",
              help="Capture filter instead of the one built from the ports.")
@click.option("--idle", type=click.FloatRange(min=1), default=300, show_default=True,
              metavar="SECONDS", help="Report a session silent this long, as it stands.")
@click.option("--write", "write", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also keep the raw capture (pcap), to attach with the report.")
@click.option("--write-size", type=click.IntRange(min=1), default=100, show_default=True,
              metavar="MB", help="Start a new --write file past this size.")
@click.option("--write-files", type=click.IntRange(min=1), default=10, show_default=True,
              metavar="N", help="Keep at most N --write files (the oldest is deleted).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this long.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Stop after N sessions have been reported.")
@click.option("--keep-failed", type=click.IntRange(min=1), default=100, show_default=True,
              metavar="N", help="Failed sessions kept for the final report (memory bound).")
@click.option("--tcpdump", "tcpdump_path", metavar="PATH",
              help="tcpdump to run (default: from PATH or /usr/sbin).")
@click.option("--debug", is_flag=True, hidden=True)
def live(iface: str, ports: tuple[str, ...], tls_ports: tuple[str, ...], any_port: bool,
         user_filter: str | None, idle: float, write: str | None, write_size: int,
         write_files: int, duration: float | None, count: int | None, keep_failed: int,
         tcpdump_path: str | None, debug: bool) -> None:
    """Capture on IFACE and print a verdict line per SMTP session as it ends.

    Run it on the MX while the problem happens (root or CAP_NET_RAW needed).  Ctrl-C
    or SIGTERM stops it with a summary and the full report of the failed sessions;
    --write keeps the capture that matches the report.
    """
    selection = _selection(ports, tls_ports, any_port)
    opts = Options(iface=iface, selection=selection,
                   bpf=build_filter(selection.ports, any_port, user_filter), idle=idle,
                   duration=duration, count=count, write=write,
                   write_bytes=write_size << 20, write_files=write_files,
                   keep_failed=keep_failed)
    try:
        sys.exit(_run(opts, tcpdump_path))
    except LiveError as exc:
        _fail(str(exc))
    except BrokenPipeError:  # stdout closed (| head): nothing left to tell anyone
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C while tcpdump was still starting: nothing to report
        sys.exit(130)
    except OSError as exc:
        if debug:
            raise
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
        if debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} "
              "(run again with --debug and report it)")


def _run(opts: Options, tcpdump_path: str | None) -> int:
    """Open the source (errors as LiveError before anything is printed), then run."""
    tcpdump = find_tcpdump(tcpdump_path)
    if tcpdump_path and tcpdump is None:
        raise LiveError(f"cannot run {tcpdump_path}: not an executable file")
    source = open_source(opts.iface, opts.bpf, tcpdump)
    source.start()
    try:
        run = LiveRun(opts, source)
        _install_signals(run)
        click.echo(f"pcapsmtp: live on {opts.iface} ({source.name}, filter {opts.bpf!r}); "
                   "Ctrl-C stops with a summary", err=True)
        return run.run()
    finally:
        source.close()
