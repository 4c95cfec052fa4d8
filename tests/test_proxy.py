"""PROXY protocol headers before SMTP (dissectors/proxy.py and the SMTP parser's preamble).

A Postfix behind HAProxy gets the header as the client's first bytes; read as SMTP it
made every session an early talker (v2's signature even holds a QUIT line).
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from dissectors import proxy
from dissectors.smtp import Command, Reply, SmtpParser
from pcapsmtp.analyze import analyze
from pcapsmtp.cli import main
from tests.craft_session import Conversation

V1 = b"PROXY TCP4 203.0.113.5 198.51.100.25 51234 25\r\n"
GREETING = b"220 mx.example ESMTP\r\n"


def v2(command: int = 1, family: int = 0x11, src: str = "203.0.113.5",
       dst: str = "198.51.100.25", sport: int = 51234, dport: int = 25,
       tlvs: bytes = b"") -> bytes:
    if family == 0x11:
        addrs = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    elif family == 0x21:
        addrs = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    else:
        addrs = b""
    body = (addrs + struct.pack("!HH", sport, dport) if addrs else b"") + tlvs
    return proxy.V2_SIGNATURE + bytes([0x20 | command, family]) + \
        struct.pack("!H", len(body)) + body


def feed(chunks: list[tuple[str, bytes]], bytewise: bool = False) -> list:
    p = SmtpParser()
    off = {"C": 0, "S": 0}
    out: list = []
    for d, data in chunks:
        pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
        for piece in pieces:
            out += p.receive(d, piece, off[d])
            off[d] += len(piece)
    out += p.close("C") + p.close("S")
    return out


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(("header", "version", "source", "destination"), [
    (V1, 1, "203.0.113.5:51234", "198.51.100.25:25"),
    (b"PROXY TCP6 2001:db8::5 2001:db8::25 51234 25\r\n", 1, "[2001:db8::5]:51234",
     "[2001:db8::25]:25"),
    (v2(), 2, "203.0.113.5:51234", "198.51.100.25:25"),
    (v2(family=0x21, src="2001:db8::5", dst="2001:db8::25", tlvs=b"\x04\x00\x01x"), 2,
     "[2001:db8::5]:51234", "[2001:db8::25]:25"),
])
def test_header_then_smtp(header: bytes, version: int, source: str, destination: str,
                          bytewise: bool) -> None:
    ev = feed([("C", header), ("S", GREETING), ("C", b"EHLO c\r\nQUIT\r\n"),
               ("S", b"250 mx\r\n221 bye\r\n")], bytewise=bytewise)
    (h,) = [e for e in ev if isinstance(e, proxy.ProxyHeader)]
    assert (h.start, h.end, h.version, h.source, h.destination, h.malformed) == (
        0, len(header), version, source, destination, False)
    assert [(c.verb, c.start) for c in ev if isinstance(c, Command)] == [
        ("EHLO", len(header)), ("QUIT", len(header) + 8)]
    assert [r.answers for r in ev if isinstance(r, Reply)] == ["CONNECT", "EHLO", "QUIT"]


def test_local_and_unknown_carry_no_client() -> None:
    local = proxy.decode(v2(command=0, family=0x00), 0)
    assert (local.command, local.source, local.malformed) == ("LOCAL", None, False)
    unknown = proxy.decode(b"PROXY UNKNOWN\r\n", 0)
    assert (unknown.protocol, unknown.source, unknown.malformed) == ("UNKNOWN", None, False)
    bad = proxy.decode(b"PROXY TCP4 300.1.1.1 198.51.100.25 1 25\r\n", 0)
    assert bad.malformed and bad.source is None


@pytest.mark.parametrize(("data", "verdict"), [
    (b"EHLO client\r\n", 0),  # ordinary SMTP: judged at the first byte
    (b"\r\nEHLO c\r\n", 0),  # an empty line first is no v2 signature
    (b"PROX", -1), (proxy.V2_SIGNATURE[:7], -1),  # could still become one
    (b"PROXY " + b"x" * 200, 0),  # no CRLF within the v1 bound
    (V1 + b"EHLO", len(V1)),
    (v2()[:20], -1), (v2() + b"EHLO", len(v2())),
])
def test_judge(data: bytes, verdict: int) -> None:
    assert proxy.judge(data) == verdict


def test_held_bytes_that_never_become_a_header_are_smtp() -> None:
    """A client that sent only 'PRO' and closed: the bytes are shown, not lost."""
    ev = feed([("S", GREETING), ("C", b"PRO")])
    assert [(c.verb, c.partial) for c in ev if isinstance(c, Command)] == [("PRO", True)]


def _ehlo_quit(conv: Conversation) -> Conversation:
    """EHLO, QUIT and the close, after whatever preface a test put before them."""
    conv.client_sends(b"EHLO client.example\r\n")
    conv.server_sends(b"250 mx.example\r\n")
    conv.client_sends(b"QUIT\r\n")
    conv.server_sends(b"221 bye\r\n")
    conv.close()
    return conv


def _behind_haproxy(header: bytes) -> Conversation:
    conv = Conversation(client="192.0.2.80", cport=40000)  # the proxy's own address
    conv.handshake()
    conv.client_sends(header)  # at once, before the greeting: that is the protocol
    conv.server_sends(GREETING)
    return _ehlo_quit(conv)


@pytest.mark.parametrize("header", [V1, v2()], ids=["v1", "v2"])
def test_a_session_behind_haproxy_is_no_early_talker(tmp_path: Path, header: bytes) -> None:
    path = _behind_haproxy(header).write(tmp_path / "x.pcap")
    (s,) = analyze(str(path)).sessions
    assert s.verdict.code == "ok-no-mail"
    assert "pipelining-violation" not in {n.code for n in s.notes}
    (h,) = [e for e in s.events if e.kind == "proxy-header"]
    assert (h.direction, h.frame, h.fields["source"]) == ("C", 4, "203.0.113.5:51234")
    assert "original client 203.0.113.5:51234" in h.text


def test_the_original_client_is_redacted(tmp_path: Path) -> None:
    path = _behind_haproxy(V1).write(tmp_path / "x.pcap")
    for fmt in ("text", "json"):
        out = CliRunner().invoke(main, ["analyze", "--redact", "-f", fmt, str(path)],
                                 catch_exceptions=False).output
        assert "203.0.113.5" not in out and "PROXY protocol v1" in out


def test_the_report_names_the_original_client(tmp_path: Path) -> None:
    (s,) = analyze(str(_behind_haproxy(v2()).write(tmp_path / "x.pcap"))).sessions
    (note,) = [n for n in s.notes if n.code == "behind-proxy"]
    assert "original client is 203.0.113.5:51234" in note.summary and "v2" in note.summary


def _rejected_through_proxy(conv: Conversation, header: bytes) -> None:
    conv.handshake()
    conv.client_sends(header)
    conv.server_sends(GREETING)
    conv.client_sends(b"EHLO client.example\r\n")
    conv.server_sends(b"250 mx.example\r\n")
    conv.client_sends(b"MAIL FROM:<a@spam.example>\r\n")
    conv.server_sends(b"554 5.7.1 rejected\r\n")
    conv.client_sends(b"QUIT\r\n")
    conv.server_sends(b"221 bye\r\n")
    conv.close()


@pytest.mark.parametrize("same_origin", [True, False])
def test_patterns_across_sessions_count_the_original_clients(tmp_path: Path,
                                                            same_origin: bool) -> None:
    """Every session behind HAProxy comes from the balancer's address: six rejected
    sessions of six different senders are no retry storm; six of one sender are, named
    by its own address (what fail2ban on the server bans)."""
    packets = []
    for i in range(6):
        conv = Conversation(client="192.0.2.80", cport=41000 + i, time=1_700_000_000.0 + i)
        origin = "203.0.113.5" if same_origin else f"203.0.113.{10 + i}"
        _rejected_through_proxy(conv, f"PROXY TCP4 {origin} 198.51.100.25 5{i}000 25\r\n"
                                .encode())
        packets += conv.packets
    packets.sort(key=lambda p: p.time)
    result = analyze(str(Conversation().write(tmp_path / "x.pcap", packets)))
    assert [s.verdict.code for s in result.sessions] == ["smtp-rejected"] * 6
    storms = [f for f in result.findings if f.code == "retry-storm"]
    if same_origin:
        (storm,) = storms
        assert "from 203.0.113.5 to" in storm.summary
    else:
        assert not storms


# -- tunnels through an HTTP or SOCKS proxy (issue 16) -------------------------------------

CONNECT = b"CONNECT mailhost:25 HTTP/1.1\r\nHost: mailhost:25\r\n\r\n"
HTTP_200 = b"HTTP/1.1 200 Connection established\r\n\r\n"
SOCKS5_REQ = b"\x05\x01\x00" + b"\x05\x01\x00\x03\x08mailhost\x00\x19"
SOCKS5_OK = b"\x05\x00" + b"\x05\x00\x00\x01\xc6\x33\x64\x19\x00\x19"
SOCKS4A_REQ = b"\x04\x01\x00\x19\x00\x00\x00\x01user\x00mailhost\x00"
SOCKS4_OK = b"\x00\x5a\x00\x19\xc6\x33\x64\x19"


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(("request_", "reply", "protocol"), [
    (CONNECT, HTTP_200, "HTTP CONNECT"), (SOCKS5_REQ, SOCKS5_OK, "SOCKS5"),
    (SOCKS4A_REQ, SOCKS4_OK, "SOCKS4a")])
def test_tunnel_preface_then_smtp(request_: bytes, reply: bytes, protocol: str,
                                  bytewise: bool) -> None:
    ev = feed([("C", request_), ("S", reply + GREETING), ("C", b"EHLO c\r\nQUIT\r\n"),
               ("S", b"250 mx\r\n221 bye\r\n")], bytewise=bytewise)
    (req,) = [e for e in ev if isinstance(e, proxy.TunnelRequest)]
    (rep,) = [e for e in ev if isinstance(e, proxy.TunnelReply)]
    assert (req.protocol, req.target, req.start, req.end) == (
        protocol, "mailhost:25", 0, len(request_))
    assert rep.granted and (rep.start, rep.end) == (0, len(reply))
    replies = [(r.code, r.start) for r in ev if isinstance(r, Reply)]
    assert replies[0] == (220, len(reply))  # the greeting after the proxy's answer
    assert [(c.verb, c.start) for c in ev if isinstance(c, Command)] == [
        ("EHLO", len(request_)), ("QUIT", len(request_) + 8)]


def test_refused_tunnel_is_said() -> None:
    ev = feed([("C", CONNECT), ("S", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")])
    (rep,) = [e for e in ev if isinstance(e, proxy.TunnelReply)]
    assert not rep.granted and rep.status == "403 Forbidden"


def test_smtp_that_starts_like_a_tunnel_is_still_smtp() -> None:
    """A greeting without any tunnel request is never read as a proxy's answer."""
    ev = feed([("S", b"220 mx ESMTP\r\n"), ("C", b"EHLO c\r\n"), ("S", b"250 mx\r\n")])
    assert not [e for e in ev if isinstance(e, proxy.TunnelReply | proxy.TunnelRequest)]


def _through_connect_proxy(port: int) -> Conversation:
    conv = Conversation(sport=port)
    conv.handshake()
    conv.client_sends(CONNECT)
    conv.server_sends(HTTP_200)
    conv.server_sends(GREETING)
    return _ehlo_quit(conv)


def test_smtp_through_a_connect_proxy_on_8080_is_found_and_no_early_talker(
        tmp_path: Path) -> None:
    path = _through_connect_proxy(8080).write(tmp_path / "x.pcap")
    res = CliRunner().invoke(main, ["analyze", "-f", "json", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json as _json
    doc = _json.loads(res.output)
    assert doc["capture"]["found_by_greeting"] is True
    (s,) = doc["sessions"]
    assert s["verdict"]["code"] == "ok-no-mail"
    codes = {n["code"] for n in s["notes"]}
    assert "through-proxy-tunnel" in codes and not codes & {"pipelining-violation",
                                                            "pipelining-tolerated"}
    text = CliRunner().invoke(main, ["analyze", str(path)], catch_exceptions=False).output
    assert "found by its 220 greeting on port(s) 8080" in " ".join(text.split())
    redacted = CliRunner().invoke(main, ["analyze", "--redact", str(path)],
                                  catch_exceptions=False).output
    assert "mailhost" not in redacted


def test_stdin_without_smtp_on_the_ports_still_says_so(tmp_path: Path) -> None:
    """stdin cannot be read twice: the error names --any-port instead."""
    path = _through_connect_proxy(8080).write(tmp_path / "x.pcap")
    res = CliRunner().invoke(main, ["analyze", "-"], input=path.read_bytes())
    assert res.exit_code == 1 and "--any-port" in res.output
