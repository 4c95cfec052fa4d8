"""The lab's network: three namespaces (client, router, server) joined by veth pairs.

Why namespaces: the captures must come from real kernels and real mail software, but
the traffic must never leave the machine. Names and addresses are fixed (documentation
ranges) so the committed samples are reproducible and easy to read.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# The namespaces' names share a prefix ($PCAPSMTP_LAB_NS, "psl" by default) so that two lab
# runs (parallel test workers, one MTA each) build networks of their own: the same
# addresses, in namespaces of their own, never meet.
PREFIX = os.environ.get("PCAPSMTP_LAB_NS", "psl")
CLI, RTR, SRV = f"{PREFIX}-cli", f"{PREFIX}-rtr", f"{PREFIX}-srv"
NAMESPACES = (CLI, RTR, SRV)

CLI4, RTR4_CLI, RTR4_SRV, SRV4 = "192.0.2.10", "192.0.2.1", "198.51.100.1", "198.51.100.25"
# A second server address, used only by the router's HAProxy: Postfix serves the PROXY
# protocol there (tests/lab/postfix.py MASTER_CF), plain SMTP on SRV4.
SRV4_PROXIED = "198.51.100.26"
# A public address of the router, present only during the scenario dnat-any: the router
# DNATs it on port 25 to SRV4, as a Docker host publishing port 25 does.
PUBLIC4 = "203.0.113.25"
CLI6, RTR6_CLI = "2001:db8:1::10", "2001:db8:1::1"
RTR6_SRV, SRV6 = "2001:db8:2::1", "2001:db8:2::25"

# veth names: the end inside each namespace.
CLI_IF, RTR_CLI_IF, RTR_SRV_IF, SRV_IF = "cli0", "rtr-cli", "rtr-srv", "srv0"

CMD_TIMEOUT = 20.0


@dataclass
class LabError(Exception):
    """A lab step failed; carries the command and its output so failures are readable."""

    message: str

    def __str__(self) -> str:
        return self.message


def run(cmd: Sequence[str], check: bool = True, timeout: float = CMD_TIMEOUT,
        input_: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded time; raise LabError with its output when it fails."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              input=input_)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc


def in_ns(ns: str, cmd: Sequence[str]) -> list[str]:
    """Prefix a command so it runs inside namespace ns."""
    return ["ip", "netns", "exec", ns, *cmd]


def ns_run(ns: str, cmd: Sequence[str], **kw) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (bounded, checked)."""
    return run(in_ns(ns, cmd), **kw)


def delete_namespaces() -> None:
    """Delete the lab's namespaces if present; deleting a namespace removes its veths too."""
    present = run(["ip", "netns", "list"], check=False).stdout
    for ns in NAMESPACES:
        if any(line.split()[0] == ns for line in present.splitlines() if line.strip()):
            # Kill what still runs there (our postfix, tcpdump), by pid, before deleting.
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                run(["kill", "-TERM", pid], check=False)
            run(["ip", "netns", "del", ns], check=False)
    # A run cut short between creating a veth pair and moving its ends leaves them in the
    # root namespace, where the next `ip link add` fails with "File exists".
    for dev in (CLI_IF, RTR_CLI_IF, RTR_SRV_IF, SRV_IF):
        run(["ip", "link", "del", dev], check=False)


def _sysctl(ns: str, key: str, value: str) -> None:
    ns_run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])


def _veth(a_name: str, a_ns: str, b_name: str, b_ns: str) -> None:
    """Create a veth pair with each end born in its namespace (nothing left in the root
    namespace if the run is cut short)."""
    run(["ip", "link", "add", "name", a_name, "netns", a_ns, "type", "veth",
         "peer", "name", b_name, "netns", b_ns])


def _addr(ns: str, dev: str, v4: str, v6: str) -> None:
    """Give dev its addresses; nodad so IPv6 is usable at once instead of after DAD."""
    ns_run(ns, ["ip", "addr", "add", v4, "dev", dev])
    ns_run(ns, ["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"])
    # One MSS per packet, as on a wire: without this, TSO/GSO hands tcpdump 6 kB "frames".
    ns_run(ns, ["ip", "link", "set", "dev", dev, "gso_max_size", "1500", "gso_max_segs", "1"])
    ns_run(ns, ["ip", "link", "set", "dev", dev, "up"])


def _prepare_ns(ns: str) -> None:
    """Create a namespace with loopback up and DAD off (no waiting for addresses)."""
    run(["ip", "netns", "add", ns])
    ns_run(ns, ["ip", "link", "set", "dev", "lo", "up"])
    _sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
    _sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")


def build() -> None:
    """Create the three namespaces, links, addresses and routes from scratch."""
    delete_namespaces()
    for ns in NAMESPACES:
        _prepare_ns(ns)
    _veth(CLI_IF, CLI, RTR_CLI_IF, RTR)
    _veth(RTR_SRV_IF, RTR, SRV_IF, SRV)
    _addr(CLI, CLI_IF, f"{CLI4}/24", f"{CLI6}/64")
    _addr(RTR, RTR_CLI_IF, f"{RTR4_CLI}/24", f"{RTR6_CLI}/64")
    _addr(RTR, RTR_SRV_IF, f"{RTR4_SRV}/24", f"{RTR6_SRV}/64")
    _addr(SRV, SRV_IF, f"{SRV4}/24", f"{SRV6}/64")
    ns_run(SRV, ["ip", "addr", "add", f"{SRV4_PROXIED}/24", "dev", SRV_IF])
    _sysctl(RTR, "net.ipv4.ip_forward", "1")
    _sysctl(RTR, "net.ipv6.conf.all.forwarding", "1")
    for ns, gw4, gw6 in ((CLI, RTR4_CLI, RTR6_CLI), (SRV, RTR4_SRV, RTR6_SRV)):
        ns_run(ns, ["ip", "route", "add", "default", "via", gw4])
        ns_run(ns, ["ip", "-6", "route", "add", "default", "via", gw6])
    wait_reachable()


def wait_reachable(timeout: float = 10.0) -> None:
    """Wait (bounded) until the client reaches the server through the router, v4 and v6.

    Why not sleep: link-up and neighbour resolution take a variable time; a UDP probe
    answered by an ICMP port-unreachable proves the whole path works.
    """
    probe = (
        "import socket,sys\n"
        "for fam,a in ((socket.AF_INET,sys.argv[1]),(socket.AF_INET6,sys.argv[2])):\n"
        "  s=socket.socket(fam,socket.SOCK_DGRAM);s.settimeout(0.5);s.connect((a,9))\n"
        "  s.send(b'x')\n"
        "  try: s.recv(1)\n"
        "  except ConnectionRefusedError: continue\n"
        "  sys.exit(1)\n"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = ns_run(CLI, ["python3", "-c", probe, SRV4, SRV6], check=False)
        if proc.returncode == 0:
            return
        time.sleep(0.1)
    raise LabError("lab network not reachable client→server within timeout")


def wait_port(ns: str, host: str, port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until a TCP port accepts connections, probing from inside ns."""
    probe = (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1);s.close()\n"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns_run(ns, ["python3", "-c", probe, host, str(port)], check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise LabError(f"port {host}:{port} not ready in {ns} within {timeout}s")



@contextmanager
def lab_network() -> Iterator[None]:
    """Build the network and always tear it down (try/finally plus atexit for hard exits)."""
    atexit.register(delete_namespaces)
    try:
        build()
        yield
    finally:
        delete_namespaces()
        atexit.unregister(delete_namespaces)


def wait_listen(ns: str, port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until something listens on TCP port in ns, without connecting to it.

    Why not connect: a probe connection through a proxy would reach Postfix and land in
    the scenario's capture as a session of its own.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(in_ns(ns, ["ss", "-tlnH", f"sport = :{port}"]), check=False).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise LabError(f"nothing listens on port {port} in {ns} within {timeout}s")


def live_tcp(ns: str) -> list[str]:
    """TCP sockets in ns other than LISTEN and TIME-WAIT (those cannot send anything new)."""
    out = run(in_ns(ns, ["ss", "-tanH"]), check=False).stdout
    return [ln for ln in out.splitlines()
            if ln.split() and ln.split()[0] not in ("LISTEN", "TIME-WAIT")]


def wait_quiet(ns: str, timeout: float = 15.0) -> list[str]:
    """Wait (bounded) until ns has no live TCP socket; kill leftovers; what was left.

    Why: a socket orphaned with unacknowledged data keeps retransmitting, and once a
    fault is lifted its segments land in the next scenario's capture.
    """
    deadline = time.monotonic() + timeout
    while (left := live_tcp(ns)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        run(in_ns(ns, ["ss", "-K", "-tan"]), check=False)
    return left
