"""The tshark engine: it agrees with the native one, sees through tunnels, and decrypts.

Needs tshark (skipped without it); the key-log scenario also needs root and tcpdump
(it captures a real TLS session on loopback).
"""

from __future__ import annotations

import datetime
import json
import os
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcapsmtp.analyze import analyze as native
from pcapsmtp.cli import main
from pcapsmtp.engine_tshark import _innermost_ip, decode_as
from pcapsmtp.engine_tshark import analyze as tshark_engine
from pcapsmtp.flows import DEFAULT_PORTS, Selection

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.pcap"))
HAVE_TSHARK = shutil.which("tshark") is not None
needs_tshark = pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")

# Where the engines must differ, and why.  Empty: on every lab sample they agree
# event for event.  (A capture whose encapsulation only tshark reads differs by
# design; test_tunnel_only_tshark_sees_it covers that.)
EXPECTED_DIFFERENCES: dict[str, str] = {}


def _dialogue(result) -> list[tuple]:
    """Every event as the report shows it (frame, side, kind, text), and each verdict."""
    out = []
    for s in result.sessions:
        out.append(("session", s.client, s.server, s.verdict.code))
        out += [(e.frame, e.direction, e.kind, e.text, e.tls) for e in s.events]
    return out


# ---- pure helpers ------------------------------------------------------------------


def test_innermost_ip_is_the_header_right_below_tcp() -> None:
    assert _innermost_ip("eth:ethertype:ip:gre:ip:tcp") == 4
    assert _innermost_ip("eth:ethertype:ip:udp:vxlan:eth:ethertype:ipv6:tcp:smtp") == 6
    assert _innermost_ip("eth:ethertype:ipv6:ip:tcp") == 4  # 4in6 tunnel
    assert _innermost_ip("eth:ethertype:ip:icmp:ip:tcp") == 0  # quoted header, not TCP
    assert _innermost_ip("eth:ethertype:arp") == 0


def test_decode_as_only_for_ports_tshark_does_not_know() -> None:
    sel = Selection(ports=frozenset(DEFAULT_PORTS | {2525, 4650}),
                    implicit_tls_ports=frozenset({465, 4650}))
    args = decode_as(sel)
    assert "tcp.port==2525,smtp" in args
    assert "tcp.port==4650,tls" in args and "tls.port==4650,smtp" in args
    assert not any(a.startswith(("tcp.port==25,", "tcp.port==465,", "tcp.port==587,"))
                   for a in args)


# ---- the CLI -----------------------------------------------------------------------


def test_tshark_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAPSMTP_TSHARK", "/nonexistent/tshark")
    res = CliRunner().invoke(main, ["analyze", str(SAMPLES[0]), "--engine", "tshark"])
    assert res.exit_code == 1
    assert "pcapsmtp: error: --engine tshark needs tshark (apt install tshark)" in res.output


def test_keylog_with_native_engine_is_a_usage_error(tmp_path: Path) -> None:
    keys = tmp_path / "keys.log"
    keys.write_text("")
    res = CliRunner().invoke(main, ["analyze", str(SAMPLES[0]), "--engine", "native",
                                    "--keylog", str(keys)])
    assert res.exit_code == 2
    assert "--keylog needs --engine tshark" in res.output


@needs_tshark
def test_report_says_which_engine_ran() -> None:
    sample = str(ROOT / "samples" / "plain-ok.pcap")
    res = CliRunner().invoke(main, ["analyze", sample, "--engine", "tshark", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tool"]["engine"] == "tshark"
    res = CliRunner().invoke(main, ["analyze", sample, "--brief"])
    assert "(native engine)" in res.output.splitlines()[0]


# ---- the engines agree -------------------------------------------------------------


@needs_tshark
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_engines_agree_on_every_sample(sample: Path) -> None:
    a, b = native(str(sample)), tshark_engine(str(sample))
    assert b.engine == "tshark" and a.engine == "native"
    assert (a.decode.frames, a.decode.tcp) == (b.decode.frames, b.decode.tcp)
    assert (a.capture.packets, a.capture.first, a.capture.last) == \
        (b.capture.packets, b.capture.first, b.capture.last)
    if sample.name in EXPECTED_DIFFERENCES:
        assert _dialogue(a) != _dialogue(b), EXPECTED_DIFFERENCES[sample.name]
        return
    assert _dialogue(a) == _dialogue(b)
    assert a.sessions  # the comparison compared something


@needs_tshark
def test_engines_agree_on_icmp_too_big(tmp_path: Path) -> None:
    """ICMP frag-needed (ignored) and ICMPv6 Packet Too Big (heeded): the same events,
    verdicts and counts from tshark's fields as from the native decoder's bytes."""
    from scapy.utils import wrpcap

    from tests.test_icmp_too_big import pmtu_conversation

    for version, ignored in ((4, True), (6, False)):
        packets, icmp_frame, _ = pmtu_conversation(version, ignored)
        path = tmp_path / f"icmp{version}.pcap"
        wrpcap(str(path), packets)
        a, b = native(str(path)), tshark_engine(str(path))
        assert _dialogue(a) == _dialogue(b)
        assert icmp_frame in [e.frame for s in b.sessions for e in s.events
                              if e.kind == "icmp-too-big"]
        assert (a.decode.non_tcp, a.decode.too_big) == (b.decode.non_tcp, b.decode.too_big) \
            == (1, 1)


# ---- tunnels: what only tshark decodes ---------------------------------------------


def _tunnelled(src: Path, dst: Path, how: str) -> None:
    """Every packet of ``src`` wrapped in a GRE or VXLAN tunnel between two routers."""
    from scapy.layers.inet import GRE, IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import rdpcap, wrpcap

    out = []
    for pkt in rdpcap(str(src)):
        inner = pkt[IP] if IP in pkt else None
        if inner is None:
            continue
        outer = Ether() / IP(src="203.0.113.1", dst="203.0.113.2")
        if how == "gre":
            wrapped = outer / GRE() / inner
        else:
            wrapped = outer / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / Ether() / inner
        wrapped.time = pkt.time
        out.append(wrapped)
    wrpcap(str(dst), out)


@needs_tshark
@pytest.mark.parametrize("how", ["gre", "vxlan"])
def test_tunnel_only_tshark_sees_it(tmp_path: Path, how: str) -> None:
    src = ROOT / "samples" / "reject-550.pcap"
    wrapped = tmp_path / f"{how}.pcap"
    _tunnelled(src, wrapped, how)
    blind = native(str(wrapped))
    assert list(blind.sessions) == [] and blind.decode.non_tcp == blind.decode.frames
    seen = tshark_engine(str(wrapped))
    plain = native(str(src))
    assert [s.verdict.code for s in seen.sessions] == ["smtp-rejected"]
    assert _dialogue(seen) == _dialogue(plain)  # same frames: one tunnelled packet each


# ---- decryption with a key-log file ------------------------------------------------


def _certificate(where: Path) -> tuple[Path, Path]:
    """A throw-away self-signed EC certificate (the server needs one for real TLS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.lo.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem, cert_pem = where / "key.pem", where / "cert.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_pem, key_pem


def _serve(srv: socket.socket, ctx: ssl.SSLContext, rcpt_reply: bytes) -> None:
    """One SMTP connection with STARTTLS over Python's ssl (OpenSSL): a real TLS stack."""
    conn, _ = srv.accept()
    conn.settimeout(10)
    reader = conn.makefile("rb")
    conn.sendall(b"220 mx.lo.example ESMTP\r\n")
    tls = False
    while line := reader.readline():
        verb = line[:4].upper()
        if verb == b"EHLO":
            conn.sendall(b"250-mx.lo.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
                         if not tls else b"250-mx.lo.example\r\n250 PIPELINING\r\n")
        elif verb == b"STAR":
            conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            conn = ctx.wrap_socket(conn, server_side=True)
            reader, tls = conn.makefile("rb"), True
        elif verb == b"MAIL":
            conn.sendall(b"250 2.1.0 Ok\r\n")
        elif verb == b"RCPT":
            conn.sendall(rcpt_reply)
        elif verb == b"DATA":
            conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            while reader.readline() not in (b".\r\n", b""):
                pass
            conn.sendall(b"250 2.0.0 Ok: queued as 4AB12C\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 2.0.0 Bye\r\n")
            break
        else:
            conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")
    conn.close()


def _tcpdump(out: Path, port: int) -> subprocess.Popen[bytes]:
    """tcpdump on loopback, returned once it is listening (so no SYN is lost)."""
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-n", "-s", "0",
                             "-Z", "root", "-w", str(out), f"tcp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen, deadline = b"", time.monotonic() + 10
    while b"listening on" not in seen and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.1)[0]:
            seen += os.read(proc.stderr.fileno(), 4096)
    if b"listening on" not in seen:
        proc.kill()
        pytest.skip(f"tcpdump did not start: {seen!r}")
    return proc


def _record(where: Path, rcpt_reply: bytes, send: bool) -> tuple[Path, Path, int]:
    """A STARTTLS session captured on loopback; the client writes an SSLKEYLOGFILE."""
    cert, key = _certificate(where)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pcap, keys = where / "session.pcap", where / "keys.log"
    dump = _tcpdump(pcap, port)
    server = threading.Thread(target=_serve, args=(srv, sctx, rcpt_reply), daemon=True)
    server.start()
    try:
        cctx = ssl.create_default_context()
        cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
        cctx.keylog_filename = str(keys)
        client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.lo.example", timeout=10)
        client.ehlo()
        client.starttls(context=cctx)
        client.ehlo()
        client.mail("alice@lo.example")
        code, _ = client.rcpt("bob@lo.example")
        if send and code == 250:
            client.data(b"Subject: hi\r\n\r\nhello\r\n")
        client.quit()
        server.join(10)
        time.sleep(0.3)  # the last ACKs
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        srv.close()
    return pcap, keys, port


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    if not HAVE_TSHARK:
        pytest.skip("tshark not installed")
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        pytest.skip("capturing on loopback needs root and tcpdump")
    runs = {}
    for name, reply, send in (
            ("rejected", b"550 5.1.1 <bob@lo.example>: Recipient address rejected: "
                         b"User unknown\r\n", False),
            ("delivered", b"250 2.1.5 Ok\r\n", True)):
        where = tmp_path_factory.mktemp(name)
        runs[name] = _record(where, reply, send)
    yield runs


def _tshark_smtp_frames(pcap: Path, keys: Path, port: int) -> list[tuple[int, str]]:
    """What tshark itself says is inside TLS: (frame, command or reply code)."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-n", "-o", f"tls.keylog_file:{keys}",
         "-d", f"tcp.port=={port},smtp", "-Y", "tls and smtp", "-T", "fields",
         "-e", "frame.number", "-e", "smtp.req.command", "-e", "smtp.response.code"],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        frame, command, code = line.split("\t")
        rows.append((int(frame), (command or code.split(",")[0]).upper()))
    return rows


def _selection(port: int) -> Selection:
    return Selection(ports=frozenset(DEFAULT_PORTS | {port}))


def test_keylog_shows_the_smtp_inside_tls_at_tsharks_frames(lab: dict) -> None:
    pcap, keys, port = lab["rejected"]
    result = tshark_engine(str(pcap), _selection(port), keylog=str(keys))
    (session,) = result.sessions
    inner = [e for e in session.events if e.fields.get("decrypted")]
    assert all(e.tls and e.text.startswith("(decrypted) ") for e in inner)
    mine = [(e.frame, str(e.fields.get("verb") or e.fields.get("code")).upper())
            for e in inner if e.kind in ("smtp-command", "smtp-reply")]
    assert mine == _tshark_smtp_frames(pcap, keys, port)
    words = [w for _, w in mine]
    assert words == ["EHLO", "250", "MAIL", "250", "RCPT", "550", "QUIT", "221"]
    # after the handshake, in wire order, each right after the record that carried it
    start = next(e for e in session.events if e.kind == "tls-client-hello")
    assert all(e.frame > start.frame for e in inner)
    for e in inner:
        before = session.events[session.events.index(e) - 1]
        assert before.frame == e.frame and before.tls


def test_keylog_turns_an_encrypted_ok_into_the_5xx_inside(lab: dict) -> None:
    pcap, keys, port = lab["rejected"]
    blind = native(str(pcap), _selection(port))
    assert [s.verdict.code for s in blind.sessions] == ["ok"]  # encrypted: looked fine
    assert not any(e.fields.get("decrypted") for s in blind.sessions for e in s.events)
    seen = tshark_engine(str(pcap), _selection(port), keylog=str(keys))
    (session,) = seen.sessions
    assert session.verdict.code == "smtp-rejected"
    assert "550 5.1.1" in session.verdict.summary
    rcpt = next(e for e in session.events if e.fields.get("verb") == "RCPT")
    assert rcpt.frame in [ev.frame for ev in session.verdict.evidence]


def test_keylog_proves_a_message_accepted_inside_tls(lab: dict) -> None:
    pcap, keys, port = lab["delivered"]
    seen = tshark_engine(str(pcap), _selection(port), keylog=str(keys))
    (session,) = seen.sessions
    assert session.verdict.code == "ok"
    assert "queued as 4AB12C" in session.verdict.summary  # the encrypted 250, now visible
    body = [e for e in session.events if e.kind == "smtp-body"]
    assert len(body) == 1 and body[0].fields["decrypted"] and body[0].fields["complete"]
    assert "hello" not in body[0].text  # bodies are counted, not shown, decrypted or not


def test_without_keylog_tshark_agrees_with_native_on_the_tls_session(lab: dict) -> None:
    pcap, _, port = lab["delivered"]
    assert _dialogue(tshark_engine(str(pcap), _selection(port))) == \
        _dialogue(native(str(pcap), _selection(port)))


def test_cli_keylog_marks_decrypted_lines(lab: dict) -> None:
    pcap, keys, port = lab["rejected"]
    res = CliRunner().invoke(main, ["analyze", str(pcap), "-p", str(port),
                                    "--keylog", str(keys)])
    assert res.exit_code == 0, res.output
    assert "(tshark engine)" in res.output.splitlines()[0]
    assert "(decrypted) rcpt TO:<bob@lo.example>" in res.output
    res = CliRunner().invoke(main, ["analyze", str(pcap), "-p", str(port), "--keylog",
                                    str(keys), "-f", "json"])
    events = json.loads(res.output)["sessions"][0]["events"]
    decrypted = [e for e in events if (e.get("fields") or {}).get("decrypted")]
    assert len(decrypted) >= 8
