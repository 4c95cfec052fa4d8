"""Live mode: filter, errors, rotation, lines, the stop path; end to end in the lab.

Most tests need no root: tcpdump's failures are simulated by a fake tcpdump script
(``--tcpdump``) that prints what the real one prints, and the whole capture loop runs
against a fake tcpdump that replays a sample capture and then waits to be stopped.
The lab test (root, namespaces, postfix, swaks) runs the real thing on the server veth.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcapsmtp import live
from pcapsmtp.capture import Frame, open_capture
from pcapsmtp.flows import DEFAULT_PORTS
from pcapsmtp.rules import Finding
from pcapsmtp.timeline import Session
from tests.lab import netns

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
LINE = re.compile(r"^\d\d:\d\d:\d\d  #(\d+)  (\S+) → (\S+)  [\d.]+s  (\S+)")


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapsmtp", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def analyze_json(path: Path) -> dict[int, tuple[str, str, str]]:
    """id -> (client, server, verdict) as `pcapsmtp analyze --format json` says."""
    proc = run_cli("analyze", "--format", "json", str(path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return {s["id"]: (s["client"], s["server"], s["verdict"]["code"]) for s in doc["sessions"]}


def live_lines(stdout: str) -> dict[int, tuple[str, str, str]]:
    """id -> (client, server, verdict) from live mode's per-session lines."""
    out = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            out[int(m.group(1))] = (m.group(2), m.group(3), m.group(4))
    return out


def frames(path: Path) -> list[Frame]:
    with open_capture(str(path)) as reader:
        return list(reader)


# ----------------------------------------------------------------------------- filter


def test_filter_follows_the_ports_and_vlan() -> None:
    bpf = live.build_filter(frozenset(DEFAULT_PORTS | {2525}))
    for port in (25, 465, 587, 2525):
        assert f"port {port}" in bpf
    assert "vlan" in bpf
    assert live.build_filter(frozenset({25}), any_port=True).startswith("(tcp) or ")


def test_filter_keeps_the_fragments_that_carry_no_ports(tmp_path: Path) -> None:
    """tcpdump itself applies the filter to a capture: a TCP segment to port 25 split
    into IPv4 fragments (and one inside IPv6 fragments) passes whole, other traffic
    does not."""
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin")
    if tcpdump is None:
        pytest.skip("tcpdump not installed (scripts/test installs it as root)")
    from scapy.layers.inet import IP, TCP, UDP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    smtp4 = IP(src="192.0.2.1", dst="198.51.100.25", id=7) / TCP(sport=40000, dport=25) \
        / (b"X" * 3000)
    frags4 = fragment(smtp4, fragsize=1000)
    smtp6 = IPv6(src="2001:db8::1", dst="2001:db8::25") / IPv6ExtHdrFragment(id=9) \
        / TCP(sport=40001, dport=25) / (b"Y" * 3000)
    frags6 = fragment6(smtp6, 1280)
    other = [IP(src="192.0.2.1", dst="198.51.100.80") / TCP(sport=40002, dport=80),
             IP(src="192.0.2.1", dst="198.51.100.53") / UDP(sport=40003, dport=53)]
    packets = [Ether() / p for p in [*frags4, *frags6, *other]]
    assert len(frags4) >= 3 and len(frags6) >= 3
    wrpcap(str(tmp_path / "in.pcap"), packets)
    bpf = live.build_filter(frozenset(DEFAULT_PORTS))
    out = subprocess.run([tcpdump, "-n", "-r", str(tmp_path / "in.pcap"), bpf],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(frags4) + len(frags6), out.stdout
    assert not any("198.51.100.80" in line or "198.51.100.53" in line for line in lines)


def test_filter_keeps_icmp_too_big(tmp_path: Path) -> None:
    """tcpdump applies the built filter: ICMP fragmentation-needed and ICMPv6 Packet Too
    Big pass (their ports are inside the quote), other ICMP does not."""
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin")
    if tcpdump is None:
        pytest.skip("tcpdump not installed (scripts/test installs it as root)")
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    quoted4 = bytes(IP(src="192.0.2.10", dst="198.51.100.25") / TCP(sport=40000, dport=25)
                    / (b"X" * 1448))[:548]
    quoted6 = bytes(IPv6(src="2001:db8::10", dst="2001:db8::25") / TCP(sport=40001, dport=25)
                    / (b"Y" * 1428))[:1232]
    wanted = [IP(src="192.0.2.1", dst="192.0.2.10") / ICMP(type=3, code=4, nexthopmtu=1280)
              / quoted4,
              IPv6(src="2001:db8::1", dst="2001:db8::10") / ICMPv6PacketTooBig(mtu=1280)
              / quoted6]
    others = [IP(src="192.0.2.1", dst="192.0.2.10") / ICMP(type=8),
              IP(src="192.0.2.1", dst="192.0.2.10") / ICMP(type=3, code=3) / quoted4,
              IPv6(src="2001:db8::1", dst="2001:db8::10") / ICMPv6EchoRequest()]
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    wrpcap(str(tmp_path / "in.pcap"), [eth / p for p in [*wanted, *others]])
    bpf = live.build_filter(frozenset(DEFAULT_PORTS))
    out = subprocess.run([tcpdump, "-n", "-r", str(tmp_path / "in.pcap"), bpf],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    assert "need to frag (mtu 1280)" in lines[0] and "packet too big" in lines[1], out.stdout


def test_user_filter_replaces_the_built_one() -> None:
    assert live.build_filter(frozenset({25}), user_filter="  host 192.0.2.1  ") == \
        "host 192.0.2.1"
    assert "port 25" in live.build_filter(frozenset({25}), user_filter="  ")


def test_built_filter_compiles() -> None:
    """libpcap accepts it (compiled for Ethernet without opening a device: no root)."""
    arch = pytest.importorskip("scapy.arch.common")
    try:
        arch.compile_filter(live.build_filter(frozenset(DEFAULT_PORTS)), linktype=1)
    except ImportError as exc:
        pytest.skip(f"libpcap not available to scapy: {exc}")


def test_tcpdump_command_streams_full_packets() -> None:
    cmd = live.tcpdump_command("/usr/sbin/tcpdump", "eth0", "tcp port 25")
    assert cmd[:3] == ["/usr/sbin/tcpdump", "-i", "eth0"]
    assert cmd[-1] == "tcp port 25"
    for flag in ("-U", "--immediate-mode", "-n"):
        assert flag in cmd
    assert cmd[cmd.index("-s") + 1] == "0" and cmd[cmd.index("-w") + 1] == "-"


# ----------------------------------------------------------------------------- errors

# What tcpdump 4.99 / libpcap 1.10 print (copied from real runs).
PERMISSION = ("tcpdump: lo: You don't have permission to perform this capture on that device\n"
              "(socket: Operation not permitted)\n")
NO_DEVICE = "tcpdump: eth9: No such device exists\n(No such device exists)\n"
DOWN = "tcpdump: ifb0: That device is not up\n"
BAD_FILTER = "tcpdump: can't parse filter expression: syntax error\n"


@pytest.mark.parametrize("stderr, expected", [
    (PERMISSION, "needs root or CAP_NET_RAW: run with sudo, or `sudo setcap"),
    (NO_DEVICE, "no such interface 'eth9'; list them with `ip link` or use -i any"),
    (DOWN, "interface 'eth9' is down; bring it up (`ip link set eth9 up`)"),
    (BAD_FILTER, "tcpdump rejects the filter 'tcp port' (can't parse filter expression"),
    ("tcpdump: something new\n", "tcpdump failed: something new"),
    ("", "tcpdump failed: no message"),
])
def test_tcpdump_errors_say_what_to_do(stderr: str, expected: str) -> None:
    msg = live.explain_tcpdump_error(stderr, "eth9", "tcp port")
    assert expected in msg
    assert "\n" not in msg


def test_kernel_drops_from_tcpdump_statistics() -> None:
    stats = "12 packets captured\n14 packets received by filter\n2 packets dropped by kernel\n"
    assert live.kernel_drops(stats) == 2
    assert live.kernel_drops("tcpdump: listening on lo") is None


def test_capture_privilege_read_from_capeff(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000002000\n")  # bit 13 = CAP_NET_RAW
    assert live.has_capture_privilege(str(status))
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")
    assert not live.has_capture_privilege(str(status))


def test_without_tcpdump_and_privilege_says_install(monkeypatch) -> None:
    monkeypatch.setattr(live, "has_capture_privilege", lambda: False)
    with pytest.raises(live.LiveError, match=r"apt install tcpdump.*CAP_NET_RAW"):
        live.open_source("eth0", "tcp", None)


def test_scapy_fallback_refuses_unknown_interface(monkeypatch) -> None:
    monkeypatch.setattr(live, "has_capture_privilege", lambda: True)
    with pytest.raises(live.LiveError, match="no such interface 'nope0'"):
        live.open_source("nope0", "tcp", None)


def fake_tcpdump(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "tcpdump"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("stderr, expected", [
    (PERMISSION, "capturing needs root or CAP_NET_RAW"),
    (NO_DEVICE, "no such interface 'eth9'"),
])
def test_cli_error_is_one_line_exit_1(tmp_path: Path, stderr: str, expected: str) -> None:
    (tmp_path / "err.txt").write_text(stderr)
    script = fake_tcpdump(tmp_path, f"cat {tmp_path / 'err.txt'} >&2\nexit 1\n")
    proc = run_cli("live", "-i", "eth9", "--tcpdump", str(script))
    assert proc.returncode == 1
    assert proc.stderr.startswith("pcapsmtp: error: ")
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_rejects_a_tcpdump_that_is_not_executable(tmp_path: Path) -> None:
    proc = run_cli("live", "-i", "lo", "--tcpdump", str(tmp_path / "nothing"))
    assert proc.returncode == 1
    assert "not an executable file" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- rotation


def frame(n: int, size: int, linktype: int = 1) -> Frame:
    data = bytes([n % 256]) * size
    return Frame(n, 1_700_000_000.0 + n * 0.001001, linktype, size, size + 4, data)


def test_rotation_by_size_and_cap_on_files(tmp_path: Path) -> None:
    out = tmp_path / "cap.pcap"
    header, record = 24, 16 + 100
    writer = live.RotatingWriter(str(out), max_bytes=header + 3 * record, max_files=2)
    for n in range(1, 11):  # 10 frames, 3 per file -> 4 files, the oldest 2 deleted
        writer.write(frame(n, 100))
    writer.close()
    assert [Path(f.path).name for f in writer.files] == ["cap.2.pcap", "cap.3.pcap"]
    assert [(f.first_frame, f.last_frame) for f in writer.files] == [(7, 9), (10, 10)]
    assert writer.deleted == 2
    assert not out.exists() and not (tmp_path / "cap.1.pcap").exists()
    got = frames(tmp_path / "cap.2.pcap")  # each file opens on its own
    assert [f.data for f in got] == [frame(n, 100).data for n in (7, 8, 9)]
    assert (tmp_path / "cap.2.pcap").stat().st_size == header + 3 * record


def test_written_frames_round_trip_exactly(tmp_path: Path) -> None:
    src = frames(SAMPLES / "reject-550.pcap")
    writer = live.RotatingWriter(str(tmp_path / "x.pcap"), 1 << 30, 5)
    for f in src:
        writer.write(f)
    writer.close()
    again = frames(tmp_path / "x.pcap")
    assert [(f.time, f.linktype, f.caplen, f.origlen, f.data) for f in again] == \
        [(f.time, f.linktype, f.caplen, f.origlen, f.data) for f in src]


def test_oversized_frame_and_linktype_change(tmp_path: Path) -> None:
    writer = live.RotatingWriter(str(tmp_path / "x.pcap"), max_bytes=50, max_files=10)
    writer.write(frame(1, 500))  # bigger than max_bytes: still written, alone
    writer.write(frame(2, 10, linktype=113))  # a pcap file has one link type
    writer.close()
    assert [(f.first_frame, f.last_frame) for f in writer.files] == [(1, 1), (2, 2)]
    assert frames(tmp_path / "x.1.pcap")[0].linktype == 113


def test_rotated_names() -> None:
    assert live.rotated_name("/a/x.pcap", 0) == "/a/x.pcap"
    assert live.rotated_name("/a/x.pcap", 3) == "/a/x.3.pcap"
    assert live.rotated_name("cap", 1) == "cap.1"


# ----------------------------------------------------------------------------- lines


def session(code: str, summary: str, open_at_end: bool = False) -> Session:
    s = Session(id=7, client=("2001:db8::10", 40010), server=("198.51.100.25", 25),
                ip_version=6, first_time=1_700_000_000.0, last_time=1_700_000_012.5,
                first_frame=1, last_frame=20, open_at_end=open_at_end)
    s.verdict = Finding(code=code, summary=summary, verdict=True)
    return s


def test_session_line_has_the_facts_in_one_line() -> None:
    line = live.session_line(session("smtp-rejected", "The server rejected\n  it. " * 20))
    assert len(line) <= live.WIDTH and "\n" not in line
    m = LINE.match(line)
    assert m and m.groups() == ("7", "[2001:db8::10]:40010", "198.51.100.25:25", "smtp-rejected")
    assert "12.5s" in line and line.endswith("...")


def test_session_line_says_why_reported_early() -> None:
    line = live.session_line(session("capture-incomplete", "short"), why="idle 300s")
    assert line.endswith("capture-incomplete  [idle 300s] short")


def test_status_line_counts_and_fits() -> None:
    from collections import Counter

    line = live.status_line(1234, 3, Counter({"ok": 10, "smtp-rejected": 2}))
    assert line == ("pcapsmtp live: 1,234 packets, 3 open, 12 finished "
                    "(ok 10, smtp-rejected 2)")
    assert len(live.status_line(1, 1, Counter({f"code{i}": i for i in range(40)}), 60)) == 60


# ----------------------------------------------------------------------------- the loop


def merged_sample(tmp_path: Path) -> Path:
    """Two real lab sessions (ok, then smtp-rejected) in one pcap, in time order."""
    out = tmp_path / "in.pcap"
    writer = live.RotatingWriter(str(out), 1 << 30, 1)
    n = 0
    for name in ("plain-ok.pcap", "reject-550.pcap"):
        for f in frames(SAMPLES / name):
            n += 1
            f.number = n
            writer.write(f)
    writer.close()
    return out


@pytest.fixture
def replaying_tcpdump(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A fake tcpdump: replays a capture on stdout, then waits to be stopped like the real
    one.  Yields (script, pidfile); kills the fake by its pid if a test left it."""
    pidfile = tmp_path / "fake.pid"
    script = fake_tcpdump(tmp_path, f"echo $$ > {pidfile}\n"
                                    f"echo 'tcpdump: listening on fake0' >&2\n"
                                    f"cat {merged_sample(tmp_path)}\nexec sleep 60\n")
    yield script, pidfile
    if pidfile.exists():
        pid = int(pidfile.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    """Lines of proc's stdout until one matches pattern (bounded by a reader thread)."""
    lines: list[str] = []
    found = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                found.set()
                return

    threading.Thread(target=pump, daemon=True).start()
    found.wait(timeout)
    return lines


def test_sigterm_prints_summary_and_leaves_no_tcpdump(tmp_path: Path,
                                                      replaying_tcpdump) -> None:
    """The whole loop without root: lines as sessions end, SIGTERM, summary, tee file."""
    script, pidfile = replaying_tcpdump
    written = tmp_path / "out.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "pcapsmtp", "live", "-i", "fake0",
                             "--tcpdump", str(script), "--write", str(written)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        first = read_until(proc, r"#2 .*smtp-rejected", timeout=20)
        assert any("#2" in ln for ln in first), first
        assert pid_alive(int(pidfile.read_text()))  # the fake is still "capturing"
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    out = "".join(first) + rest
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "pcapsmtp live summary: fake0, tcpdump" in out
    assert "stopped: SIGTERM" in out
    assert "sessions: 2  (" in out and "ok 1" in out and "smtp-rejected 1" in out
    assert "failed sessions: 1" in out and "Session 2 " in out  # the full block
    assert not pid_alive(int(pidfile.read_text())), "tcpdump left behind"
    seen = live_lines(out)
    assert seen == analyze_json(written) == analyze_json(tmp_path / "in.pcap")
    assert {code for _c, _s, code in seen.values()} == {"ok", "smtp-rejected"}


def test_count_stops_by_itself(tmp_path: Path, replaying_tcpdump) -> None:
    script, pidfile = replaying_tcpdump
    proc = run_cli("live", "-i", "fake0", "--tcpdump", str(script), "--count", "1")
    assert proc.returncode == 0, proc.stderr
    assert "stopped: --count 1 reached" in proc.stdout
    assert not pid_alive(int(pidfile.read_text()))


def test_duration_stops_by_itself_with_no_traffic(tmp_path: Path) -> None:
    """Nothing arrives after the header: the loop must still wake up and stop."""
    header = tmp_path / "h.pcap"
    header.write_bytes(live.pcap_header(1))
    script = fake_tcpdump(tmp_path, f"cat {header}\nexec sleep 60\n")
    start = time.monotonic()
    proc = run_cli("live", "-i", "fake0", "--tcpdump", str(script), "--duration", "1")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 15
    assert "stopped: --duration 1s reached" in proc.stdout and "sessions: 0" in proc.stdout


def test_tcpdump_dying_mid_run_is_reported(tmp_path: Path) -> None:
    script = fake_tcpdump(tmp_path, f"cat {merged_sample(tmp_path)}\n"
                                    "echo 'tcpdump: pcap_loop: The interface went down' >&2\n"
                                    "exit 1\n")
    proc = run_cli("live", "-i", "fake0", "--tcpdump", str(script))
    assert proc.returncode == 1
    assert "sessions: 2" in proc.stdout  # what was captured is not lost
    assert "capture ended: tcpdump failed: pcap_loop: The interface went down" in proc.stdout
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- the lab


def lab_missing() -> str | None:
    """Why the lab part is skipped; as root a missing capability fails (tests.lab.preflight)."""
    from tests.lab.preflight import skip_reason

    reason = skip_reason()
    if reason:
        return reason
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return "no network namespaces here"
    # building the lab would tear down another run's namespaces; ones with no process in
    # them are a cut-short run's leftovers, which building the lab clears
    ours = [line.split()[0] for line in probe.stdout.splitlines()
            if line.strip() and line.split()[0] in netns.NAMESPACES]
    if any(subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=10).stdout.strip() for ns in ours):
        return "the lab's namespaces are in use by another run; run this test on its own"
    return None


RST_AFTER_BANNER = (
    "import socket,struct,sys\n"
    "s=socket.create_connection((sys.argv[1],25),timeout=10)\n"
    "s.recv(512)\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))\n"
    "s.close()\n"
)


@pytest.mark.lab
@pytest.mark.slow
def test_live_in_the_lab_agrees_with_analyze(tmp_path: Path) -> None:
    """Real postfix, real swaks, live mode on the server's veth; then SIGTERM."""
    reason = lab_missing()
    if reason:
        pytest.skip(reason)
    from tests.lab.netns import CLI, SRV, SRV4, SRV_IF, in_ns, lab_network
    from tests.lab.postfix import running_postfix

    written = tmp_path / "live.pcap"
    cmd = in_ns(SRV, [sys.executable, "-m", "pcapsmtp", "live", "-i", SRV_IF,
                      "--write", str(written), "--idle", "60"])
    # ours only: the lab's own captures also run tcpdump on this veth (but into files)
    tcpdump_cmdline = f"tcpdump -i {SRV_IF} -s 0 -U --immediate-mode -n -Z root -w - "
    with lab_network(), running_postfix() as _pf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)
        try:
            assert proc.stderr is not None
            started = proc.stderr.readline()  # printed once tcpdump's header arrived
            assert started.startswith(f"pcapsmtp: live on {SRV_IF} (tcpdump"), started
            base = ["swaks", "--server", SRV4, "--from", "sender@example.org",
                    "--ehlo", "client.lab.example", "--body", "live test", "--timeout", "15"]
            for rcpt in ("user@lab.example", "nobody@lab.example"):
                subprocess.run(in_ns(CLI, [*base, "--to", rcpt]), capture_output=True,
                               timeout=30)
            subprocess.run(in_ns(CLI, [sys.executable, "-c", RST_AFTER_BANNER, SRV4]),
                           capture_output=True, timeout=30)
            # closed sessions are reported CLOSE_GRACE (5 s) after their close
            first = read_until(proc, r"#3 ", timeout=40)
            proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
            leftover = subprocess.run(["pgrep", "-f", tcpdump_cmdline], capture_output=True,
                                      text=True, timeout=10).stdout.split()
            for pid in leftover:
                os.kill(int(pid), signal.SIGKILL)
    out = "".join(first) + rest
    assert not leftover, "tcpdump left behind"
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM" in out and "pcapsmtp live summary" in out
    seen = live_lines(out)
    assert seen == analyze_json(written), out
    codes = [code for _c, _s, code in seen.values()]
    assert codes[:2] == ["ok", "smtp-rejected"], out
    assert codes[2] != "ok" and len(codes) == 3
    assert "failed sessions: 2" in out


class FakeSource:
    """The source protocol LiveRun needs, over a list of frames (no process, no thread)."""

    name = "fake"

    def __init__(self, items: list[object]) -> None:
        import queue

        self.queue: queue.Queue[object] = queue.Queue()
        for item in items:
            self.queue.put(item)
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.queue.put(live._END)  # what a real source does once its process has exited

    def close(self) -> None:
        self.stopped = True

    def stderr(self) -> str:
        return "3 packets dropped by kernel"

    def exited_on_its_own(self) -> str | None:
        return None


class TTY:
    """A stderr that claims to be a terminal and records what was written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_loop_reports_idle_sessions_keeps_status_and_bounds_memory() -> None:
    """Half a session (no close) goes idle and is reported as it stands; only the last
    --keep-failed failed sessions are kept; the status line is cleared before each line."""
    import io

    from pcapsmtp.flows import Selection

    ok = frames(SAMPLES / "plain-ok.pcap")
    rejects = frames(SAMPLES / "reject-550.pcap")
    half = frames(SAMPLES / "greylist-450.pcap")[:6]  # SYN .. some dialogue, no FIN
    items: list[Frame] = []
    for group in (ok, rejects, half):
        for f in group:
            f.number = len(items) + 1
            items.append(f)
    opts = live.Options(iface="fake0", selection=Selection(), bpf="tcp", idle=1.0,
                        duration=1.5, keep_failed=1)
    out, err = io.StringIO(), TTY()
    run = live.LiveRun(opts, FakeSource(items), out=out, err=err)
    assert run.run() == 0
    text = out.getvalue()
    lines = live_lines(text)
    # the backlog of old frames is judged in capture time: nothing idles before its turn
    assert [code for _c, _s, code in lines.values()] == ["ok", "smtp-rejected",
                                                          "capture-incomplete"], text
    idle_line = next(ln for ln in text.splitlines() if "#3 " in ln)
    assert "capture-incomplete  [idle 1s] " in idle_line
    assert run.pipeline.finished == [] and not run.pipeline.table.active
    assert [s.id for s in run.tally.failed] == [3] and run.tally.failed_dropped == 1
    assert "failed sessions: 2 (the oldest 1" in text
    assert "(the oldest 1 not kept, --keep-failed)" in text
    assert "WARNING: the kernel dropped 3 packets" in text
    assert "pcapsmtp live: " in err.text and "\r\033[K" in err.text
