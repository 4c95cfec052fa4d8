"""tcpdump inside a namespace, started and stopped so that no packet of a scenario is lost.

Why wait for "listening on": tcpdump opens the interface asynchronously; a scenario that
starts before that loses its SYN. Why SIGINT and a wait: tcpdump flushes on exit.
Why --immediate-mode: with TPACKET_V3 buffering, packets still in an unfinished ring
block are lost when tcpdump is stopped.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.lab.netns import LabError, in_ns

# ICMPv6 errors only (type < 128): neighbour discovery chatter is noise in the samples.
CAPTURE_FILTER = "tcp or icmp or (icmp6 and ip6[40] < 128)"


def _wait_listening(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Read tcpdump's stderr until it says it is listening (bounded)."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while time.monotonic() < deadline and b"listening on" not in seen:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    if b"listening on" not in seen:
        raise LabError(f"tcpdump did not start: {seen.decode(errors='replace')}")
    return seen.decode(errors="replace")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGINT so tcpdump flushes; escalate to SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def tcpdump(ns: str, iface: str, out: Path, snaplen: int = 0,
            bpf: str = CAPTURE_FILTER) -> Iterator[Path]:
    """Capture on iface inside ns into out for the duration of the with-block."""
    cmd = ["tcpdump", "-i", iface, "-s", str(snaplen), "-U", "--immediate-mode", "-n", "-Z", "root",
           "-w", str(out), bpf]
    proc = subprocess.Popen(in_ns(ns, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(proc, timeout=10)
        yield out
        time.sleep(0.5)  # let the last packets (final ACKs) reach the capture
    finally:
        _stop(proc)
        if proc.stderr:
            proc.stderr.close()


@contextmanager
def captures(specs: Sequence[tuple[str, str, Path]], snaplen: int = 0) -> Iterator[None]:
    """Several captures at once (server side and client side), all stopped on exit."""
    with ExitStack() as stack:
        for ns, iface, out in specs:
            stack.enter_context(tcpdump(ns, iface, out, snaplen=snaplen))
        yield
