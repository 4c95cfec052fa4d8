"""Notes (certificates, old TLS, slow banner, TCP trouble) and cross-session patterns."""

from __future__ import annotations

from pcapsmtp.rules import diagnose, diagnose_capture
from pcapsmtp.timeline import Session
from tests.timeline_builders import T0, SessionBuilder, healthy


def notes(s: Session) -> dict[str, str]:
    diagnose(s, strict=True)
    return {n.code: n.summary for n in s.notes}


def tls_session(**cert: object) -> Session:
    b = SessionBuilder().handshake().banner().ehlo().starttls()
    b.client_hello(versions=()).server_hello(0x0303).certificate(**cert)  # type: ignore[arg-type]
    b.hs("S", "ServerHelloDone").hs("C", "ClientKeyExchange", same_frame=False).ccs("C")
    b.finished("C").ccs("S", same_frame=False).finished("S")
    return b.app_data("C").app_data("S").fin("C").build()


def test_expired_certificate_against_capture_time() -> None:
    n = notes(tls_session(not_after=T0 - 86400 * 3))
    assert "certificate-expired" in n
    assert "expired 3 days before this capture" in n["certificate-expired"]


def test_certificate_expired_hours_ago_says_hours() -> None:
    assert "expired 1 day before" in notes(
        tls_session(not_after=T0 - 86400 - 7200))["certificate-expired"]
    assert "expired 5 hours before" in notes(
        tls_session(not_after=T0 - 5 * 3600 - 30))["certificate-expired"]
    assert "expired 1 minute before" in notes(
        tls_session(not_after=T0 - 61))["certificate-expired"]


def test_valid_certificate_gets_no_note() -> None:
    n = notes(tls_session())
    assert not any(c.startswith("certificate") for c in n)


def test_not_yet_valid_and_self_signed() -> None:
    n = notes(tls_session(not_before=T0 + 86400, self_signed=True))
    assert "certificate-not-yet-valid" in n
    assert "certificate-self-signed" in n


def test_certificate_name_against_the_sni() -> None:
    """DESIGN's 'name mismatch' note: the SNI the client sent against the leaf's names
    (SANs, else the CN); a wildcard covers exactly one left-most label."""
    assert "certificate-name-mismatch" not in notes(tls_session())  # CN=mx.example
    assert "certificate-name-mismatch" not in notes(tls_session(subject="CN=*.example"))
    n = notes(tls_session(subject="CN=mail.other.example"))
    assert "asked for mx.example (SNI)" in n["certificate-name-mismatch"]
    assert "names mail.other.example" in n["certificate-name-mismatch"]

    def with_sans(*sans: str) -> Session:
        s = tls_session(subject="CN=unrelated.example")
        (cert,) = [e for e in s.events if e.kind == "tls-certificate"]
        cert.fields["certificates"][0]["sans"] = list(sans)
        return s

    assert "certificate-name-mismatch" not in notes(with_sans("smtp.example", "MX.example."))
    assert "certificate-name-mismatch" in notes(with_sans("*.mx.example"))  # one label only
    assert "certificate-name-mismatch" in notes(with_sans("a.mx.example", "example"))


def test_old_tls_negotiated() -> None:
    b = SessionBuilder().handshake().banner().ehlo().starttls()
    s = b.client_hello(versions=(), legacy_version=0x0301).server_hello(0x0301).fin("S").build()
    n = notes(s)
    assert "old-tls-version" in n and "TLS1.0" in n["old-tls-version"]


def test_bare_lf_end_of_data_accepted_is_a_warning_with_both_frames() -> None:
    b = SessionBuilder().handshake().banner().ehlo()
    b.cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
    b.cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok")
    b.cmd("DATA").reply(354, "End data with <CR><LF>.<CR><LF>")
    b.body(bare_lf_end=True)
    body_frame = b.frame
    s = b.reply(250, "2.0.0 Ok: queued as 4XyZ").quit().fin("C").build()
    diagnose(s, strict=True)
    (note,) = [n for n in s.notes if n.code == "bare-lf-end-of-data"]
    assert note.severity == "warning"
    assert f"frame {body_frame}" in note.summary
    assert "accepted the message" in note.summary and "250 2.0.0 Ok" in note.summary
    assert s.verdict.code == "ok"  # a note beside the verdict, not a verdict


def test_crlf_end_of_data_gets_no_smuggling_note() -> None:
    s = SessionBuilder().handshake().banner().ehlo().message().quit().fin("C").build()
    assert "bare-lf-end-of-data" not in notes(s)


def test_slow_banner() -> None:
    s = SessionBuilder().handshake().wait(12).banner().ehlo().quit().fin("C").build()
    n = notes(s)
    assert "slow-banner" in n and "12." in n["slow-banner"]
    assert s.verdict.code == "ok-no-mail"


def test_retransmissions_note() -> None:
    b = healthy()
    for _ in range(4):
        b.retrans("S", 100, 40)
    n = notes(b.fin("C").build())
    assert "retransmissions" in n and "server retransmitted 4" in n["retransmissions"]


def test_ban_after_failure_links_sessions() -> None:
    fail = (SessionBuilder(session_id=1).handshake().banner().ehlo().starttls()
            .client_hello(versions=(), suites=(0x000A,)).fin("S").build())
    later = [SessionBuilder(session_id=i, start=T0 + 60 * i, first_frame=100 * i).syn()
             .wait(3).syn(repeat=True).build() for i in (2, 3)]
    other = (SessionBuilder(session_id=4, client=("192.0.2.9", 40000), start=T0 + 100)
             .syn().build())
    sessions = [fail, *later, other]
    for s in sessions:
        diagnose(s, strict=True)
    assert fail.verdict.code == "tls-closed-during-handshake"
    found = [f for f in diagnose_capture(sessions, strict=True) if f.code == "ban-after-failure"]
    assert len(found) == 1
    assert found[0].sessions == [1, 2, 3]
    assert "sessions 2, 3" in found[0].summary
    assert "fail2ban" in found[0].next_step


def test_no_ban_without_a_failure_first() -> None:
    sessions = [SessionBuilder(session_id=i, start=T0 + i).syn().build() for i in (1, 2)]
    for s in sessions:
        diagnose(s, strict=True)
    assert not [f for f in diagnose_capture(sessions) if f.code == "ban-after-failure"]


def test_retry_storm_reported_once() -> None:
    sessions = []
    for i in range(1, 8):
        s = (SessionBuilder(session_id=i, start=T0 + 20 * i).handshake().banner()
             .ehlo().cmd("MAIL FROM:<a@example.org>").reply(451, "4.3.0 try later")
             .quit().fin("C").build())
        diagnose(s, strict=True)
        sessions.append(s)
    storms = [f for f in diagnose_capture(sessions, strict=True) if f.code == "retry-storm"]
    assert len(storms) == 1
    assert storms[0].sessions == [1, 2, 3, 4, 5, 6, 7]


def test_ehlo_differs_between_sessions() -> None:
    a = SessionBuilder(session_id=1).handshake().banner().ehlo().quit().fin("C").build()
    b = (SessionBuilder(session_id=2, client=("192.0.2.7", 1234)).handshake().banner()
         .ehlo(caps=("PIPELINING", "8BITMIME")).quit().fin("C").build())
    for s in (a, b):
        diagnose(s, strict=True)
    found = [f for f in diagnose_capture([a, b], strict=True) if f.code == "ehlo-differs"]
    assert len(found) == 1 and found[0].sessions == [1, 2]
    assert "STARTTLS" in found[0].summary


def test_real_postfix_accepting_a_bare_lf_end_gets_the_note_at_the_right_frame() -> None:
    """samples/bare-lf-end.pcap: the lab's real Postfix 3.7 queued a message ended by
    "\\n.\\n".  The note must point at the frame that carried those bytes -- found here
    with scapy, independently of our reassembly and parser."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    pcap = Path(__file__).resolve().parent.parent / "samples" / "bare-lf-end.pcap"
    frames = [i for i, p in enumerate(rdpcap(str(pcap)), 1)
              if TCP in p and bytes(p[TCP].payload).endswith(b"\n.\n")]
    assert len(frames) == 1
    out = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json", str(pcap)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    (session,) = json.loads(out)["sessions"]
    assert session["verdict"]["code"] == "ok"
    (note,) = [n for n in session["notes"] if n["code"] == "bare-lf-end-of-data"]
    assert note["evidence"][0]["frame"] == frames[0]
    assert note["evidence"][1]["what"].startswith("250 ")


def test_real_postfix_after_a_starttls_injection_probe_is_ok_with_a_note() -> None:
    """samples/starttls-inject.pcap: "STARTTLS\\r\\nRSET\\r\\n" in one segment to real Postfix,
    which discards the RSET; then a normal TLS session.  The verdict is ok, the note
    names the RSET, and the ClientHello is found at the frame that carries it (scapy)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    pcap = Path(__file__).resolve().parent.parent / "samples" / "starttls-inject.pcap"
    packets = rdpcap(str(pcap))
    hello = [i for i, p in enumerate(packets, 1) if TCP in p and p[TCP].dport == 25
             and bytes(p[TCP].payload)[:1] == b"\x16"]
    assert hello
    out = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json", str(pcap)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    (session,) = json.loads(out)["sessions"]
    assert session["verdict"]["code"] == "ok-no-mail"  # EHLO and QUIT inside TLS
    (note,) = [n for n in session["notes"] if n["code"] == "plaintext-after-starttls"]
    assert "`RSET`" in note["summary"]
    (ch,) = [e for e in session["events"] if e["kind"] == "tls-client-hello"]
    assert ch["frame"] == hello[0]
