"""Redaction and cut-down reports: nothing of the original addresses and names survives.

The main test collects every address and name from the *unredacted* JSON report
(independently of pcapsmtp.redact, from the places the protocol puts them) and
searches each redacted format for it.  It runs on crafted captures that hold the
awkward cases (IPv6, address literals, certificates with organisation names, SNI,
CRAM-MD5 challenges, names after a reply code's hyphen), and on every lab sample.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scapy.utils import wrpcap

from pcapsmtp.analyze import analyze
from pcapsmtp.cli import main
from pcapsmtp.redact import Pseudonyms, Redactor, Scope, cut, names_in_session, registrable, share
from tests.craft_session import Conversation
from tests.tls_fixtures import run_tls

SAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("samples").glob("*.pcap"))
FORMATS = ("text", "json", "markdown", "html")
AUTH_SECRET = base64.b64encode(b"\0alice\0hunter2-very-secret").decode()
BODY_MARKER = "BODYMARKER-7781-do-not-show"
CRAM_CHALLENGE = base64.b64encode(b"<1896.697170952@postoffice.hidden-host.net>").decode()


# ---------------------------------------------------------------------------
# a crafted capture with everything a redactor can miss


def _cert(tmp: Path) -> tuple[Path, Path]:
    """Self-signed, with an organisation and a locality that name the owner."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "mail.hidden-host.net"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hidden Widgets Ltd"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Smalltown"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
    ])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x5EC12E7)
            .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
            .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.timezone.utc))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("mail.hidden-host.net"), x509.DNSName("*.mx.hidden-host.net")]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp / "c.pem", tmp / "c.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


def _plain(c: Conversation) -> None:
    """AUTH PLAIN, a message with a body, names after reply-code hyphens."""
    c.handshake()
    c.server_sends(b"220 mx1.secret-corp.co.uk ESMTP ready\r\n")
    c.client_sends(b"EHLO laptop.internal.acme-widgets.com\r\n")
    c.server_sends(b"250-mx1.secret-corp.co.uk Hello laptop.internal.acme-widgets.com "
                   b"[203.0.113.7]\r\n250-AUTH PLAIN CRAM-MD5\r\n250 PIPELINING\r\n")
    c.client_sends(f"AUTH PLAIN {AUTH_SECRET}\r\n".encode())
    c.server_sends(b"235 2.7.0 Authentication successful\r\n")
    c.client_sends(b"MAIL FROM:<alice.smith@acme-widgets.com>\r\n")
    c.server_sends(b"250 2.1.0 Ok\r\n")
    c.client_sends(b"RCPT TO:<bob@secret-corp.co.uk>\r\n")
    c.server_sends(b"250 2.1.5 Ok\r\n")
    c.client_sends(b"DATA\r\n")
    c.server_sends(b"354 go ahead\r\n")
    c.client_sends(f"Subject: {BODY_MARKER}\r\nReceived: from relay.acme-widgets.com "
                   f"([198.18.0.9])\r\n\r\n{BODY_MARKER}\r\n.\r\n".encode())
    c.server_sends(b"250 2.0.0 Ok: queued as 4F3A2B1C on mx1.secret-corp.co.uk\r\n")
    c.client_sends(b"QUIT\r\n")
    c.server_sends(b"221 2.0.0 mx1.secret-corp.co.uk closing\r\n")
    c.close()


def _ipv6_rejected(c: Conversation) -> None:
    """IPv6, an address literal as EHLO argument, a 550 naming the recipient."""
    c.handshake()
    c.server_sends(b"220 gw.example-v6.org ESMTP\r\n")
    c.client_sends(b"EHLO [IPv6:2001:db8:1::77]\r\n")
    c.server_sends(b"250 gw.example-v6.org greets [IPv6:2001:db8:1::77]\r\n")
    c.client_sends(b"MAIL FROM:<dave@example-v6.org>\r\n")
    c.server_sends(b"250 Ok\r\n")
    c.client_sends(b"RCPT TO:<carol@secret-corp.co.uk>\r\n")
    c.server_sends(b"550 5.1.1 <carol@secret-corp.co.uk>: Recipient address rejected\r\n")
    c.client_sends(b"QUIT\r\n")
    c.server_sends(b"221 Bye\r\n")
    c.close()


def _starttls(c: Conversation, cert: tuple[Path, Path]) -> None:
    """TLS 1.2, so the certificate is visible; SNI names the server."""
    c.handshake()
    c.server_sends(b"220 mail.hidden-host.net ESMTP\r\n")
    c.client_sends(b"EHLO client7.branch.acme-widgets.com\r\n")
    c.server_sends(b"250-mail.hidden-host.net\r\n250 STARTTLS\r\n")
    c.client_sends(b"STARTTLS\r\n")
    c.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    ex = run_tls(cert, max_version=ssl.TLSVersion.TLSv1_2, sni="mail.hidden-host.net",
                 app=[("C", b"EHLO x\r\n"), ("S", b"250 ok\r\n")], close=True)
    for side, data in ex.chunks:
        (c.client_sends if side == "C" else c.server_sends)(data)
    c.close()


def _cram(c: Conversation) -> None:
    """A CRAM-MD5 challenge carries the server's name in base64; then a timeout."""
    c.handshake()
    c.server_sends(b"220 postoffice.hidden-host.net ESMTP\r\n")
    c.client_sends(b"EHLO PC17\r\n")
    c.server_sends(b"250-postoffice.hidden-host.net\r\n250 AUTH CRAM-MD5\r\n")
    c.client_sends(b"AUTH CRAM-MD5\r\n")
    c.server_sends(f"334 {CRAM_CHALLENGE}\r\n".encode())
    c.client_sends(base64.b64encode(b"alice 0123456789abcdef0123456789abcdef") + b"\r\n")
    c.server_sends(b"535 5.7.8 Authentication failed\r\n")
    c.client_sends(b"MAIL FROM:<alice@hidden-host.net>\r\n", step=60.0)
    c.server_sends(b"421 4.4.2 postoffice.hidden-host.net Error: timeout exceeded\r\n")
    c.close(client_first=False)


def build_capture(tmp: Path, name: str = "secret-site-capture.pcap") -> Path:
    """Four sessions (ok, rejected over IPv6, STARTTLS 1.2, CRAM-MD5 + timeout)."""
    convs = [
        Conversation(client="203.0.113.7", server="198.51.100.9", cport=41001),
        Conversation(client="2001:db8:1::77", server="2001:db8:2::25", cport=41002,
                     time=1_700_000_100.0),
        Conversation(client="203.0.113.8", server="192.0.2.99", cport=41003,
                     time=1_700_000_200.0),
        Conversation(client="203.0.113.9", server="192.0.2.98", cport=41004,
                     time=1_700_000_300.0),
    ]
    _plain(convs[0])
    _ipv6_rejected(convs[1])
    _starttls(convs[2], _cert(tmp))
    _cram(convs[3])
    packets = sorted((p for c in convs for p in c.packets), key=lambda p: float(p.time))
    path = tmp / name
    wrpcap(str(path), packets)
    return path


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_capture(tmp_path_factory.mktemp("redact"))


# ---------------------------------------------------------------------------
# what the capture holds, read off the unredacted JSON (independently of redact.py)


def originals(report: dict) -> set[str]:
    """Every address and name a redacted report must not show."""
    found: set[str] = set()
    found.add(Path(report["capture"]["file"]).name)
    for s in report["sessions"]:
        for ep in (s["client"], s["server"]):
            found.add(ep.rsplit(":", 1)[0].strip("[]"))
        for e in s["events"]:
            found |= _names_in_event(e)
    return {n for n in found if n}


def _names_in_event(e: dict) -> set[str]:
    f, out = e["fields"], set()
    if e["kind"] == "smtp-command" and f.get("verb") in ("EHLO", "HELO"):
        arg = (f.get("argument") or "").split()
        if arg:
            out.add(arg[0].strip("[]").removeprefix("IPv6:"))
    if e["kind"] == "smtp-command" and f.get("verb") in ("MAIL", "RCPT"):
        for addr in re.findall(r"<([^>]+)>", f.get("argument") or ""):
            local, _, domain = addr.rpartition("@")
            out |= {addr, local + "@", domain}  # a local part counts where it is one
    if e["kind"] == "smtp-reply" and f.get("answers") in ("CONNECT", "EHLO") and f["lines"]:
        first = f["lines"][0].split()
        if first and "." in first[0]:
            out.add(first[0])
    if e["kind"] == "smtp-reply":
        for line in f.get("lines") or []:
            out |= set(re.findall(r"\d+\.\d+\.\d+\.\d+", line))
            for addr in re.findall(r"<([^<>@\s]+@[^<>\s]+)>", line):
                out |= {addr, addr.rpartition("@")[0] + "@"}
    if e["kind"] == "tls-client-hello" and f.get("sni"):
        out.add(f["sni"])
    for cert in f.get("certificates") or []:
        out |= {cert.get("common_name") or "", cert.get("serial") or "",
                cert.get("sha256") or ""}
        out |= {san.removeprefix("*.") for san in cert.get("sans") or []}
        for dn in (cert.get("subject") or "", cert.get("issuer") or ""):
            out |= {v for k, v in re.findall(r"([A-Za-z]+)=([^,]+)", dn) if k != "C"}
    return out


def plain_text(output: str, fmt: str) -> str:
    """What a reader sees: HTML entities and Markdown escapes undone."""
    if fmt == "html":
        return html.unescape(output)
    if fmt == "markdown":
        return re.sub(r"\\([\\`*_{}\[\]<>|#~!&])", r"\1", output)
    return output


def leaked(names: set[str], text: str) -> list[str]:
    low = text.lower()
    return sorted(n for n in names
                  if re.search(r"(?<![A-Za-z0-9])" + re.escape(n.lower())
                               + ("" if n.endswith("@") else r"(?![A-Za-z0-9])"), low))


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["analyze", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def check_capture(path: Path, key: str | None = None) -> None:
    names = originals(json.loads(run_cli(str(path), "-f", "json")))
    assert names, "the collector found nothing: the test would prove nothing"
    for fmt in FORMATS:
        extra = ["--redact-key", key] if key else ["--redact"]
        out = plain_text(run_cli(str(path), "-f", fmt, *extra), fmt)
        assert leaked(names, out) == [], f"{fmt} report of {path.name} shows originals"
        assert "redacted" in out.lower()
        if fmt == "text":  # pseudonyms may be longer than originals: still 100 columns
            assert max(len(line) for line in out.splitlines()) <= 100


# ---------------------------------------------------------------------------
# the acceptance test


def test_crafted_capture_holds_what_the_test_looks_for(crafted: Path) -> None:
    names = originals(json.loads(run_cli(str(crafted), "-f", "json")))
    for expected in ("203.0.113.7", "2001:db8:1::77", "mx1.secret-corp.co.uk",
                     "laptop.internal.acme-widgets.com", "alice.smith@acme-widgets.com",
                     "mail.hidden-host.net", "Hidden Widgets Ltd", "Smalltown",
                     "alice.smith@", "secret-site-capture.pcap",
                     "carol@secret-corp.co.uk", "PC17"):
        assert expected in names


def test_redacted_crafted_capture_shows_no_original_in_any_format(crafted: Path) -> None:
    check_capture(crafted)


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_redacted_samples_show_no_original_in_any_format(sample: Path) -> None:
    check_capture(sample, key="list-key")


def test_cram_md5_challenge_is_redacted_and_login_prompts_are_kept(crafted: Path) -> None:
    plain = run_cli(str(crafted))
    assert CRAM_CHALLENGE in plain
    out = run_cli(str(crafted), "--redact")
    assert CRAM_CHALLENGE not in out
    assert re.search(r"334 challenge-[0-9a-f]{6}", out)
    assert "1 AUTH challenge" in out


def test_auth_secret_and_body_never_shown_redacted_or_not(crafted: Path) -> None:
    for fmt in FORMATS:
        for extra in ([], ["--redact"]):
            out = run_cli(str(crafted), "-f", fmt, *extra)
            assert AUTH_SECRET not in out and "hunter2" not in out
            assert BODY_MARKER not in out
            assert "198.18.0.9" not in out  # the Received: line is in the body


def test_summary_lists_counts_by_category(crafted: Path) -> None:
    data = json.loads(run_cli(str(crafted), "-f", "json", "--redact"))
    counts = data["redacted"]
    # 8 endpoints (4 clients, 4 servers), the 203.0.113.7 in the EHLO reply is a client
    assert counts["addresses"] == 8
    assert counts["e-mail addresses"] == 5  # alice.smith, bob, dave, carol, alice
    assert counts["host names"] >= 6
    assert counts["certificate names"] == 2  # organisation and locality; C= is kept
    assert counts["certificate fingerprints"] == 2  # serial and SHA-256
    assert counts["file names"] == 1
    assert data["capture"]["file"].startswith("capture-")
    text = run_cli(str(crafted), "--redact")
    assert re.search(r"redacted: 8 addresses, \d+ host names, 5 e-mail addresses", text)


def test_same_original_same_pseudonym_throughout(crafted: Path) -> None:
    data = json.loads(run_cli(str(crafted), "-f", "json", "--redact"))
    s1 = data["sessions"][0]
    banner = next(e for e in s1["events"] if e["kind"] == "smtp-reply")["fields"]["lines"][0]
    server_name = banner.split()[0]
    assert re.fullmatch(r"host-[0-9a-f]{6}\.example", server_name)
    # the same name in the EHLO reply, the 250 after DATA and the 221
    texts = " ".join(e["text"] for e in s1["events"])
    assert texts.count(server_name) == 4
    # the client's address in "[...]" of the EHLO reply is the client endpoint's pseudonym
    client = s1["client"].rsplit(":", 1)[0]
    assert f"[{client}]" in texts
    assert s1["client"].endswith(":41001") and s1["server"].endswith(":25")  # ports kept


def test_redact_key_gives_stable_pseudonyms_across_reports(crafted: Path, tmp_path: Path) -> None:
    a = run_cli(str(crafted), "-f", "json", "--redact-key", "k1")
    b = run_cli(str(crafted), "-f", "json", "--redact-key", "k1")
    c = run_cli(str(crafted), "-f", "json", "--redact-key", "k2")
    assert a == b
    assert json.loads(a)["sessions"][0]["client"] != json.loads(c)["sessions"][0]["client"]
    # another capture holding the same client: the same pseudonym
    other = build_capture(tmp_path, "other.pcap")
    d = run_cli(str(other), "-f", "json", "--redact-key", "k1")
    assert json.loads(a)["sessions"][0]["client"] == json.loads(d)["sessions"][0]["client"]


def test_without_key_pseudonyms_differ_between_runs(crafted: Path) -> None:
    a = json.loads(run_cli(str(crafted), "-f", "json", "--redact"))
    b = json.loads(run_cli(str(crafted), "-f", "json", "--redact"))
    assert a["sessions"][0]["client"] != b["sessions"][0]["client"]


def test_keep_domains_hides_local_parts_and_hosts_but_not_domains(crafted: Path) -> None:
    out = run_cli(str(crafted), "--keep-domains")
    for hidden in ("alice.smith", "mx1.secret-corp", "laptop.internal", "PC17", "203.0.113.7",
                   "mail.hidden-host.net", "Hidden Widgets"):
        assert hidden.lower() not in out.lower()
    assert re.search(r"MAIL FROM:<user-[0-9a-f]{6}@acme-widgets\.com>", out)
    assert re.search(r"220 host-[0-9a-f]{6}\.secret-corp\.co\.uk ESMTP", out)
    assert "<user-" in out and "@secret-corp.co.uk>" in out


def test_html_escaping_does_not_hide_a_leak() -> None:
    # the checker itself: an entity-escaped original is still found
    assert leaked({"Let's Encrypt"}, plain_text("CN=Let&#x27;s Encrypt", "html"))
    assert leaked({"my_host.example"}, plain_text(r"my\_host.example", "markdown"))
    assert not leaked({"10.0.0.1"}, "10.0.0.10")


# ---------------------------------------------------------------------------
# units


def test_registrable_domain_rule() -> None:
    assert registrable("mx1.corp.example.com") == "example.com"
    assert registrable("a.b.example.co.uk") == "example.co.uk"
    assert registrable("example.org") == "example.org"


def test_pseudonyms_depend_on_key_and_category() -> None:
    a, b = Pseudonyms(b"k"), Pseudonyms(b"k")
    assert a.host("MX.Example.COM") == b.host("mx.example.com")
    assert a.address("192.0.2.1") == b.address("192.0.2.1") != Pseudonyms(b"x").address(
        "192.0.2.1")
    assert re.fullmatch(r"ip6-[0-9a-f]{6}", a.address("2001:db8::1"))
    assert a.counts()["host names"] == 1 and a.counts()["addresses"] == 2


def test_pseudonym_collisions_get_longer_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Pseudonyms(b"k")
    real = p._digest
    monkeypatch.setattr(p, "_digest", lambda c, o: iter(["abcdef", *list(real(c, o))[1:]]))
    one, two = p.host("one.example"), p.host("two.example")
    assert one == "host-abcdef.example"
    assert two != one and len(two) > len(one)
    assert p.host("one.example") == one  # and the first keeps its pseudonym


@pytest.mark.parametrize("text, hidden", [
    ("250-mx.example.org Hello pc [10.1.2.3]", ["mx.example.org", "10.1.2.3"]),
    ("Hello [10.000.000.01]", ["10.000.000.01"]),
    ("EHLO [IPv6:2001:db8::5]", ["2001:db8::5"]),
    ("from <x.y+tag@sub.example.net>", ["x.y+tag", "sub.example.net"]),
    ("at 20:53:47.131 and 2.0.0 Ok", []),
])
def test_scrub_patterns(text: str, hidden: list[str]) -> None:
    r = Redactor(b"k")
    from pcapsmtp.timeline import Event
    r.collect_event(Event(0.0, 1, "S", "smtp-reply", text, fields={"lines": [text]}))
    r._compile()
    out = r.scrub(text)
    for h in hidden:
        assert h not in out
    if not hidden:
        assert out == text


def test_redact_leaves_the_original_result_alone(crafted: Path) -> None:
    result = analyze(str(crafted))
    before = result.sessions[0].client
    out, sharing = share(result, redact=True, key=b"k")
    assert result.sessions[0].client == before
    assert out.sessions[0].client != before
    assert sharing.redacted and sharing.redacted["addresses"] == 8


# ---------------------------------------------------------------------------
# cutting a report down


def test_cut_by_criteria(crafted: Path) -> None:
    result = analyze(str(crafted))
    codes = {s.id: s.verdict.code for s in result.sessions}
    failing = {i for i, c in codes.items() if c not in ("ok", "ok-no-mail")}
    assert failing and failing != set(codes)
    out, shown = cut(result, Scope(failures_only=True))
    assert {s.id for s in out.sessions} == failing
    assert shown.startswith(f"{len(failing)} of 4 sessions")
    out, _ = cut(result, Scope(clients=("2001:db8:1::77",)))
    assert [s.id for s in out.sessions] == [2]
    out, _ = cut(result, Scope(clients=("203.0.113.0/24",), servers=("192.0.2.99:25",)))
    assert [s.id for s in out.sessions] == [3]
    out, _ = cut(result, Scope(servers=("[2001:db8:2::25]:25",)))
    assert [s.id for s in out.sessions] == [2]
    out, _ = cut(result, Scope(servers=("192.0.2.99:587",)))
    assert len(out.sessions) == 0
    out, shown = cut(result, Scope())
    assert out is result and shown is None


def test_cli_filters(crafted: Path) -> None:
    out = run_cli(str(crafted), "--session", "2,4", "--brief")
    assert "Session 2 " in out and "Session 4 " in out and "Session 1 " not in out
    assert "2 of 4 sessions shown (--session 2,4)" in out
    data = json.loads(run_cli(str(crafted), "-f", "json", "--failures-only"))
    assert all(not s["verdict"]["code"].startswith("ok") for s in data["sessions"])
    assert data["shown"].endswith("(--failures-only)")
    out = run_cli(str(crafted), "--client", "203.0.113.8", "--redact")
    assert "--client (redacted)" in out and "203.0.113.8" not in out


@pytest.mark.parametrize("args", [["--session", "x"], ["--client", "mail.example"],
                                  ["--server", "300.1.1.1:25"]])
def test_cli_filter_typos_are_usage_errors(crafted: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["analyze", str(crafted), *args])
    assert result.exit_code == 2


# ---------------------------------------------------------------------------
# what makes --redact cheap must not change what it replaces: the names are found by
# the analysis workers as sessions finish (names_in_session), learnt by the parent in
# session order, and each session is redacted once, into a store of its own


def _shard(client: str, cport: int, server: str, count: int = 2) -> int:
    """The analysis worker (of ``count``) that builds this connection (packets.shard_hash)."""
    import socket

    from pcapsmtp.packets import shard_hash
    raw = socket.inet_aton
    return shard_hash(raw(client), raw(server), cport, 25) % count


def _port_in_shard(client: str, server: str, shard: int, start: int) -> int:
    return next(p for p in range(start, start + 100) if _shard(client, p, server) == shard)


def _ehlo_only(c: Conversation, name: bytes, reply: bytes = b"250 ok\r\n") -> None:
    c.handshake()
    c.server_sends(b"220 mx.relay.test ESMTP\r\n")
    c.client_sends(b"EHLO " + name + b"\r\n")
    c.server_sends(reply)
    c.client_sends(b"QUIT\r\n")
    c.server_sends(b"221 bye\r\n")
    c.close()


def build_two_worker_capture(tmp: Path) -> Path:
    """Four sessions over two analysis workers (by their ports), in this order of start:

    1. worker 1, closes last: STARTTLS; the certificate's L= is ``Smalltown``
    2. worker 0, closes first: ``EHLO Smalltown`` -- the certificate named it first
    3. worker 0: a 550 that names ``PC17`` (a bare name: learnt from an EHLO only)
    4. worker 1: ``EHLO PC17``

    then 2,100 frames of other traffic, so the analysis finishes sessions 2-4 in a
    sweep, before session 1 (at the end of the capture): in the order they closed.
    """
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    client, server = "203.0.113.50", "192.0.2.25"
    ports = [_port_in_shard(client, server, shard, 41000 + 100 * i)
             for i, shard in enumerate((1, 0, 0, 1))]
    convs = [Conversation(client=client, server=server, cport=port,
                          time=1_700_000_000.0 + i) for i, port in enumerate(ports)]
    c = convs[0]
    c.handshake()
    c.server_sends(b"220 mx.relay.test ESMTP\r\n")
    c.client_sends(b"EHLO ws1.corp.test\r\n")
    c.server_sends(b"250-mx.relay.test\r\n250 STARTTLS\r\n")
    c.client_sends(b"STARTTLS\r\n")
    c.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    ex = run_tls(_cert(tmp), max_version=ssl.TLSVersion.TLSv1_2, sni=None)
    for side, data in ex.chunks:
        (c.client_sends if side == "C" else c.server_sends)(data)
    c.time += 60.0  # idle: it closes after the others
    c.close()
    _ehlo_only(convs[1], b"Smalltown")
    _ehlo_only(convs[2], b"ws1.corp.test", b"550 5.7.1 Access denied for PC17\r\n")
    _ehlo_only(convs[3], b"PC17")
    packets = sorted((p for c in convs for p in c.packets), key=lambda p: float(p.time))
    for i in range(2100):
        other = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
            src="198.18.0.1", dst="198.18.0.2") / UDP(sport=5353, dport=5353)
        other.time = 1_700_000_020.0 + i * 0.001
        packets.append(other)
    packets.sort(key=lambda p: float(p.time))
    path = tmp / "two-workers.pcap"
    wrpcap(str(path), packets)
    return path


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_two_worker_capture(tmp_path_factory.mktemp("redact2"))


def test_two_worker_capture_holds_what_the_tests_look_for(two_workers: Path) -> None:
    from pcapsmtp.store import learnt

    assert [_shard("203.0.113.50", int(s["client"].rsplit(":", 1)[1]), "192.0.2.25")
            for s in json.loads(run_cli(str(two_workers), "-f", "json"))["sessions"]] \
        == [1, 0, 0, 1]
    result = analyze(str(two_workers), jobs=1, learn=names_in_session)
    found = learnt(result.sessions, names_in_session)
    assert ("dn", "Smalltown") in found[0] and ("host", "Smalltown") in found[1]
    assert ("host", "PC17") in found[3] and not any("PC17" in v for _, v in found[2])
    plain = run_cli(str(two_workers))
    assert "Access denied for PC17" in plain and "EHLO Smalltown" in plain


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_names_learnt_in_another_worker_are_replaced(two_workers: Path, jobs: str) -> None:
    data = json.loads(run_cli(str(two_workers), "-f", "json", "--redact-key", "k",
                              "--jobs", jobs))
    out = json.dumps(data)
    assert "PC17" not in out and "Smalltown" not in out
    texts = [" ".join(e["text"] for e in s["events"]) for s in data["sessions"]]
    ehlo = re.search(r"EHLO (host-[0-9a-f]{6}\.example)", texts[3]).group(1)
    assert f"Access denied for {ehlo}" in texts[2]  # session 3's only name: from session 4


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_names_are_learnt_in_session_order_not_as_sessions_finish(two_workers: Path,
                                                                   jobs: str) -> None:
    # "Smalltown" is first a certificate name (session 1, which finished last), so the
    # EHLO of session 2 shows that pseudonym, not a host name's
    data = json.loads(run_cli(str(two_workers), "-f", "json", "--redact-key", "k",
                              "--jobs", jobs))
    texts = [" ".join(e["text"] for e in s["events"]) for s in data["sessions"]]
    assert re.search(r"EHLO name-[0-9a-f]{6}\b", texts[1]), texts[1]


_PSEUDONYM = {"addresses": r"ip6?-[0-9a-f]{6,64}", "host names": r"host-[0-9a-f]{6,64}",
              "e-mail addresses": r"user-[0-9a-f]{6,64}",
              "certificate names": r"name-[0-9a-f]{6,64}",
              "certificate fingerprints": r"fp-[0-9a-f]{6,64}",
              "file names": r"capture-[0-9a-f]{6,64}",
              "AUTH challenges": r"challenge-[0-9a-f]{6,64}"}


@pytest.mark.parametrize("extra", [[], ["--keep-domains"], ["--jobs", "2"],
                                   ["--failures-only"]])
def test_counts_are_what_the_report_replaced(crafted: Path, two_workers: Path,
                                             extra: list[str]) -> None:
    """The counts (printed before the sessions in JSON) are the distinct pseudonyms that
    the report shows, category by category: none missing, none extra."""
    for path in (crafted, two_workers):
        out = run_cli(str(path), "-f", "json", "--redact-key", "k", *extra)
        counts = json.loads(out)["redacted"]
        body = out.split('"redacted":', 1)[0] + out.split('"sessions":', 1)[1]
        shown = {cat: len(set(re.findall(r"(?<![\w-])" + pat + r"(?![\w-])", body)))
                 for cat, pat in _PSEUDONYM.items()}
        assert shown == counts, path.name
        assert counts["addresses"] >= 2
        text = run_cli(str(path), "--redact-key", "k", *extra)
        assert text.split("redacted: ")[-1].startswith(
            ", ".join(f"{n} {c}" for c, n in counts.items() if n and n != 1)[:20])


def test_pseudonym_collisions_come_out_the_same_from_every_path(
        crafted: Path, two_workers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two first pseudonyms per category ("ip-0", "ip-1"), collisions are sure: which
    original gets the longer digest depends on the order of first use, which must not
    depend on the number of workers or on where the names were learnt."""
    from pcapsmtp.render import json as json_report

    real = Pseudonyms._digest

    def two_first(self: Pseudonyms, category: str, original: str) -> Iterable[str]:
        digests = list(real(self, category, original))
        return iter([str(int(digests[0][0], 16) % 2), *digests])

    monkeypatch.setattr(Pseudonyms, "_digest", two_first)
    for path in (crafted, two_workers):
        one = run_cli(str(path), "-f", "json", "--redact-key", "k", "--jobs", "1")
        two = run_cli(str(path), "-f", "json", "--redact-key", "k", "--jobs", "2")
        assert one == two
        if path == crafted:  # 6 IPv4 addresses for 2 short pseudonyms
            assert re.search(r"\bip-[01]\b", one) and re.search(r"\bip-[0-9a-f]{6}\b", one), \
                "no collision: the test proves nothing"
        # learnt by loading the sessions (no learn= at the analysis), rendered lazily
        out, sharing = share(analyze(str(path), jobs=1), redact=True, key=b"k")
        assert json_report.render(out, sharing) == one


def test_names_in_session_each_once_in_order_of_first_mention() -> None:
    from pcapsmtp.timeline import Event, Session

    s = Session(id=1, client=("192.0.2.1", 4000), server=("192.0.2.2", 25), ip_version=4,
                first_time=0.0, last_time=1.0, first_frame=1, last_frame=9)
    s.events = [Event(0.0, 1, "S", "smtp-reply", "220 b.example.org ESMTP",
                      fields={"answers": "CONNECT", "lines": ["b.example.org ESMTP"]}),
                Event(0.1, 2, "C", "smtp-command", "EHLO a.example.net",
                      fields={"verb": "EHLO", "argument": "a.example.net"}),
                Event(0.2, 3, "S", "smtp-reply", "250 b.example.org a.example.net",
                      fields={"lines": ["b.example.org a.example.net"], "code": 250})]
    assert names_in_session(s) == (("host", "b.example.org"), ("host", "a.example.net"))


def test_scrub_results_are_remembered_only_for_the_names_learnt() -> None:
    r = Redactor(b"k")
    r._compile()
    assert r.scrub("Access denied for PC17") == "Access denied for PC17"
    r.learn_host("PC17")  # learnt later (a test; the CLI learns everything first)
    r._compile()
    assert re.fullmatch(r"Access denied for host-[0-9a-f]{6}\.example",
                        r.scrub("Access denied for PC17"))
    assert r.summary()["host names"] == 1
