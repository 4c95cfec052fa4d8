"""The command line as a user meets it: exit status, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.craft_session import Conversation, simple_session


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "pcapsmtp", *args], input=stdin,
                          capture_output=True, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(), proc.stderr.decode())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcapsmtp: error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0]


def test_version_names_the_tool() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("pcapsmtp, version ")


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run("analyze", str(tmp_path / "nope.pcap")), "nope.pcap")


def test_not_a_capture(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("Hello, this is not a capture\n")
    assert_one_line_error(run("analyze", str(f)), "notes.txt")


def test_capture_without_smtp(tmp_path: Path) -> None:
    conv = Conversation(sport=80)
    conv.handshake()
    conv.client_sends(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    conv.server_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conv.close()
    assert_one_line_error(run("analyze", str(conv.write(tmp_path / "web.pcap"))),
                          "no SMTP sessions", "nor a 220 greeting on any other port", "--port")


def test_smtp_only_on_another_port_is_found_by_its_greeting(tmp_path: Path) -> None:
    """Issue 16: a relay on port 80 (or 2525, 8025): found without --any-port, and said."""
    path = simple_session(Conversation(sport=80)).write(tmp_path / "x.pcap")
    proc = run("analyze", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "found by its 220 greeting on port(s) 80, as --any-port does" in " ".join(
        proc.stdout.split())
    doc = json.loads(run("analyze", "-f", "json", str(path)).stdout)
    assert doc["capture"]["found_by_greeting"] and doc["sessions"][0]["verdict"]["code"] == "ok"


def test_port_option_follows_other_ports(tmp_path: Path) -> None:
    conv = simple_session(Conversation(sport=2525))
    path = conv.write(tmp_path / "x.pcap")
    proc = run("analyze", "--format", "json", "--port", "2525", str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sessions"][0]["server"] == "198.51.100.25:2525"
    proc = run("analyze", "--format", "json", "--any-port", str(path))
    assert json.loads(proc.stdout)["sessions"][0]["server"] == "198.51.100.25:2525"


def test_truncated_capture_gives_the_sessions_before_the_cut(tmp_path: Path) -> None:
    first = simple_session(Conversation(cport=40001))
    path = first.write(tmp_path / "x.pcap")
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-30])  # the last record loses its tail
    proc = run("analyze", "--format", "json", str(cut))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["capture"]["problem"]
    assert len(report["sessions"]) == 1
    text = run("analyze", str(cut))
    assert "WARNING" in text.stdout and "Traceback" not in text.stderr


def test_stdin_is_read_with_dash(tmp_path: Path) -> None:
    data = simple_session().write(tmp_path / "x.pcap").read_bytes()
    proc = run("analyze", "--format", "json", "-", stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["capture"]["file"] == "-"


def test_auth_secret_never_in_any_output(tmp_path: Path) -> None:
    secret = "S3cret-Pass!"
    import base64
    blob = base64.b64encode(f"\0user\0{secret}".encode()).decode()
    login_pw = base64.b64encode(secret.encode()).decode()
    c = Conversation(sport=587)
    c.handshake()
    c.server_sends(b"220 mx ESMTP\r\n")
    c.client_sends(b"EHLO a\r\n")
    c.server_sends(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    c.client_sends(f"AUTH PLAIN {blob}\r\n".encode())
    c.server_sends(b"535 5.7.8 Error: authentication failed\r\n")
    c.client_sends(b"AUTH LOGIN\r\n")
    c.server_sends(b"334 VXNlcm5hbWU6\r\n")
    c.client_sends(base64.b64encode(b"user") + b"\r\n")
    c.server_sends(b"334 UGFzc3dvcmQ6\r\n")
    c.client_sends(login_pw.encode() + b"\r\n")
    c.server_sends(b"235 2.7.0 Authentication successful\r\n")
    c.close()
    path = c.write(tmp_path / "auth.pcap")
    for fmt in ("text", "json"):
        proc = run("analyze", "--format", fmt, str(path))
        assert proc.returncode == 0, proc.stderr
        for needle in (secret, blob, login_pw):
            assert needle not in proc.stdout
        assert "AUTH PLAIN" in proc.stdout


def test_fail_on_sets_the_exit_status(tmp_path: Path) -> None:
    path = simple_session().write(tmp_path / "x.pcap")
    proc = run("analyze", "--format", "json", str(path))
    code = json.loads(proc.stdout)["sessions"][0]["verdict"]["code"]
    assert run("analyze", "--fail-on", code, str(path)).returncode == 3
    assert run("analyze", "--fail-on", "tcp-reset", str(path)).returncode == 0


def test_text_report_fits_100_columns_and_is_deterministic(tmp_path: Path) -> None:
    c = Conversation()
    c.handshake()
    c.server_sends(b"220 " + b"x" * 300 + b"\r\n")
    c.client_sends(b"EHLO " + b"y" * 300 + b"\r\n")
    c.close()
    path = c.write(tmp_path / "x.pcap")
    first, second = run("analyze", str(path)), run("analyze", str(path))
    assert first.returncode == 0
    assert first.stdout == second.stdout
    assert max(len(line) for line in first.stdout.splitlines()) <= 100
    assert first.stdout.startswith("pcapsmtp ")


SAMPLES = sorted((Path(__file__).resolve().parent.parent / "samples").glob("*.pcap"))


def test_every_sample_report_fits_100_columns() -> None:
    from pcapsmtp.analyze import analyze
    from pcapsmtp.render import text

    assert SAMPLES, "samples/ holds the lab's captures"
    for path in SAMPLES:
        report = text.render(analyze(str(path)))
        too_wide = [line for line in report.splitlines() if len(line) > 100]
        assert not too_wide, (path.name, too_wide[:3])


def test_jobs_option(tmp_path: Path) -> None:
    path = simple_session().write(tmp_path / "x.pcap")
    assert run("analyze", "-j", "0", str(path)).returncode == 2
    one, two = run("analyze", "-j", "1", str(path)), run("analyze", "-j", "2", str(path))
    assert one.returncode == two.returncode == 0 and one.stdout == two.stdout
