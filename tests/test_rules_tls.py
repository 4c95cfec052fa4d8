"""TLS and STARTTLS verdicts, from synthetic timelines."""

from __future__ import annotations

from pcapsmtp.rules import diagnose
from pcapsmtp.timeline import Session
from tests.timeline_builders import SessionBuilder


def verdict(s: Session) -> str:
    diagnose(s, strict=True)
    return s.verdict.code


def frames(s: Session) -> list[int | None]:
    return [e.frame for e in s.verdict.evidence]


def upto_starttls() -> SessionBuilder:
    return SessionBuilder().handshake().banner().ehlo().starttls()


def test_exchange_client_silent_after_tls12_handshake() -> None:
    b = upto_starttls().tls12_handshake()
    fin_frame = b.last.frame
    s = b.wait(60).app_data("S").fin("S").build()
    assert verdict(s) == "tls-client-silent-after-handshake"
    summary = s.verdict.summary
    assert summary.startswith("TLS 1.2 handshake completed (server Finished, frame "
                              f"{fin_frame},")
    assert "the client sent no TLS record afterwards" in summary
    assert "The server closed 60.0 s later" in summary
    assert "451 4.7.0" in summary
    assert fin_frame in frames(s)
    assert "client side" in s.verdict.next_step


def test_client_that_sent_app_data_is_not_silent() -> None:
    s = (upto_starttls().tls12_handshake().app_data("C").app_data("S").app_data("C")
         .app_data("S").fin("S").fin("C").build())
    assert verdict(s) == "ok"
    assert "encrypted" in s.verdict.summary
    assert "cannot show whether a message was accepted" in s.verdict.summary
    assert "whether any message" in s.verdict.cannot_prove


def test_server_silent_after_client_record() -> None:
    b = upto_starttls().tls12_handshake().app_data("C")
    first = b.last.frame
    s = b.wait(300).fin("C").build()
    assert verdict(s) == "tls-server-silent-after-handshake"
    assert first in frames(s)
    assert "never answered" in s.verdict.summary


def test_tls13_inferred_finished_is_said_so() -> None:
    s = upto_starttls().tls13_handshake().wait(30).fin("S").build()
    assert verdict(s) == "tls-client-silent-after-handshake"
    assert "TLS 1.3 handshake completed" in s.verdict.summary
    assert "inferred" in s.verdict.summary


def test_implicit_tls_server_owes_the_banner() -> None:
    b = SessionBuilder(server=("198.51.100.26", 465), implicit_tls=True).handshake()
    s = b.tls12_handshake().wait(30).fin("C").build()
    assert verdict(s) == "tls-server-silent-after-handshake"


def test_silent_but_capture_ended_is_incomplete() -> None:
    s = upto_starttls().tls12_handshake().wait(5).build()
    assert s.open_at_end
    assert verdict(s) == "capture-incomplete"


def test_record_lost_before_server_side_capture_is_named() -> None:
    """tls-server-silent.pcap: a later client ACK proves 54 bytes were sent, never seen."""
    b = upto_starttls().tls12_handshake()
    fin_frame = b.last.frame
    b.retrans("S", offset=1452, length=242, original_frame=fin_frame)
    b.gap("C", length=54, reason="sent-unseen", offset=313)
    gap_frame = b.last.frame
    b.wait(4.8).app_data("S", length=74).alert("S", description=0, level=1, encrypted=True)
    s = b.fin("S").build(open_at_end=True)
    assert verdict(s) == "tls-client-silent-after-handshake"
    summary = s.verdict.summary
    assert (f"the client's sequence numbers show it sent 54 bytes after the handshake "
            f"(frame {gap_frame},") in summary
    assert "its first TLS record was lost between the client and this capture point" in summary
    assert "the client sent no TLS record" not in summary
    assert "capture ended before the client's FIN" in summary
    assert {fin_frame, gap_frame} <= set(frames(s))
    assert "client side" in s.verdict.next_step
    assert "firewall" in s.verdict.next_step
    assert "too small for an MTU problem" in s.verdict.cannot_prove
    assert "capture-incomplete" in [n.code for n in s.notes]


def test_bytes_missing_only_from_the_capture_void_the_silence() -> None:
    """acked-unseen: the server acknowledged bytes the capture lacks; the client did speak."""
    b = upto_starttls().tls12_handshake().gap("C", length=54, reason="acked-unseen", offset=313)
    s = b.wait(5).app_data("S").fin("S").build(open_at_end=True)
    assert verdict(s) == "capture-incomplete"


def test_unacknowledged_record_at_the_client_is_not_server_silence() -> None:
    """tls-server-silent.client.pcap: the record is retransmitted past the server's 421.
    The server acted as toward a silent client; nothing here shows the server silent."""
    b = upto_starttls().tls12_handshake().app_data("C", length=49)
    rec = b.last.frame
    for _ in range(3):
        b.wait(0.4).retrans("C", offset=313, length=54, original_frame=rec)
    b.wait(4).app_data("S", length=74).alert("S", description=0, level=1, encrypted=True)
    answer = b.last.frame - 1
    b.fin("S").wait(1.5).retrans("C", offset=313, length=54, original_frame=rec)
    last_rt = b.last.frame
    s = b.build(open_at_end=True)
    assert verdict(s) == "tls-client-silent-after-handshake"
    summary = s.verdict.summary
    assert f"the client sent its first record (frame {rec}," in summary
    assert "retransmitted it 4 time(s)" in summary
    assert "not an answer" in summary
    assert "this capture cannot show the server was" in summary
    assert {rec, answer, last_rt} <= set(frames(s))
    assert "server side" in s.verdict.next_step


def test_server_record_after_the_last_retransmission_is_an_answer() -> None:
    b = upto_starttls().tls12_handshake().app_data("C")
    rec = b.last.frame
    s = (b.retrans("C", offset=313, length=54, original_frame=rec).app_data("S")
         .app_data("C").app_data("S").fin("C").fin("S").build())
    assert verdict(s) == "ok"


def test_handshake_alert_names_sender_and_description() -> None:
    b = upto_starttls().client_hello(versions=(), suites=(0x0005, 0x000A), legacy_version=0x0301)
    s = b.alert("S", description=40).fin("S").build()
    assert verdict(s) == "tls-handshake-alert"
    summary = s.verdict.summary
    assert "The server sent a TLS fatal alert handshake_failure (40)" in summary
    assert "all of them legacy" in summary
    assert "TLS_RSA_WITH_RC4_128_SHA" in summary
    alert = [e for e in s.events if e.kind == "tls-alert"][0]
    assert alert.frame in frames(s)


def test_protocol_version_from_the_server_names_the_way_out() -> None:
    """A server's protocol_version to a TLS 1.0-only ClientHello (the lab's
    tls-protocol-version): the cause is known, only the server's minimum is not."""
    b = upto_starttls().client_hello(versions=(), suites=(0xC014, 0x0035), legacy_version=0x0301)
    s = b.alert("S", description=70).fin("C").build()
    assert verdict(s) == "tls-handshake-alert"
    assert "no TLS version in common" in s.verdict.summary
    assert s.verdict.cannot_prove == ("which version the server requires: it accepts none up "
                                      "to TLS1.0")
    assert s.verdict.next_step.startswith("enable TLS1.2 or later on the client")
    assert "let the server accept TLS1.0 (Postfix: smtpd_tls_protocols)" in s.verdict.next_step


def test_other_alerts_keep_the_general_advice() -> None:
    """handshake_failure (suites or versions), and a protocol_version the CLIENT sends
    (it refused the version the server chose): the logs must tell."""
    for who, description in (("S", 40), ("C", 70)):
        b = upto_starttls().client_hello(versions=(0x0304, 0x0303), suites=(0x1301,))
        s = b.alert(who, description=description).fin("S").build()
        assert verdict(s) == "tls-handshake-alert"
        assert s.verdict.next_step.startswith("check the "), (who, description)
        assert "smtpd_tls_protocols" not in s.verdict.next_step


def test_close_notify_after_handshake_is_not_a_handshake_alert() -> None:
    s = (upto_starttls().tls12_handshake().app_data("C").app_data("S")
         .alert("C", description=0, level=1, encrypted=True).fin("C").build())
    # one client record, answered, then close_notify: too little for a message
    assert verdict(s) == "ok-no-mail"


def test_fin_during_client_hello() -> None:
    b = upto_starttls().client_hello(versions=(), suites=(0x000A, 0x0005))
    s = b.fin("S").build()
    assert verdict(s) == "tls-closed-during-handshake"
    assert "during ClientHello" in s.verdict.summary
    assert "the server closed" in s.verdict.summary


def test_alert_after_the_peers_fin_is_a_reaction_not_the_cause() -> None:
    """server-closes-on-clienthello: server FIN, then the client's decode_error, then RST."""
    b = upto_starttls().client_hello()
    hello_frame = b.last.frame
    b.fin("S")
    fin_frame = b.last.frame
    b.alert("C", description=50)
    alert_frame = b.last.frame
    s = b.rst("S").build()
    assert verdict(s) == "tls-closed-during-handshake"
    summary = s.verdict.summary
    assert "during ClientHello" in summary
    assert f"the server closed 0.010 s later (FIN, frame {fin_frame}" in summary
    assert "The client reacted to the server's close with a fatal alert decode_error (50)" \
        in summary
    assert "not its cause" in summary
    assert [hello_frame, fin_frame, alert_frame] == frames(s)[:3]
    assert "server's log" in s.verdict.next_step
    notes = [n.code for n in s.notes]
    assert "tls-handshake-alert" not in notes


def test_alert_before_the_peers_fin_still_decides() -> None:
    s = upto_starttls().client_hello().alert("S", description=40).fin("S").build()
    assert verdict(s) == "tls-handshake-alert"


def test_client_closes_after_server_hello_done() -> None:
    s = (upto_starttls().client_hello().server_hello().certificate()
         .hs("S", "ServerHelloDone").rst("C").build())
    assert verdict(s) == "tls-closed-during-handshake"
    assert "after the server's ServerHelloDone" in s.verdict.summary
    assert "RST" in s.verdict.summary


def test_tls13_client_never_finishes() -> None:
    s = (upto_starttls().client_hello().server_hello(0x0304, 0x1301).ccs("S")
         .finished("S", inferred=True).fin("C").build())
    assert verdict(s) == "tls-closed-during-handshake"
    assert "TLS 1.3 flight" in s.verdict.summary


def test_server_answers_client_hello_with_plaintext() -> None:
    s = (upto_starttls().client_hello().not_tls("S", "HTTP/1.1 101").fin("C").build())
    assert verdict(s) == "tls-closed-during-handshake"
    assert "does not speak TLS" in s.verdict.summary
    assert "HTTP/1.1 101" in s.verdict.summary


def test_client_hello_on_plaintext_port() -> None:
    s = (SessionBuilder().handshake()
         .add("C", "smtp-unparsed", "\\x16\\x03\\x01...", reason="tls-record", preview="\\x16")
         .banner().rst("C").build())
    assert verdict(s) == "tls-closed-during-handshake"
    assert "without STARTTLS" in s.verdict.summary
    assert "465" in s.verdict.summary


def test_starttls_refused() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .starttls(454, "4.7.0 TLS not available due to local problem")
         .quit().fin("C").build())
    assert verdict(s) == "starttls-refused"
    assert "454 4.7.0" in s.verdict.summary


def test_starttls_refused_then_plaintext_delivery_is_ok() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .starttls(454, "4.7.0 TLS not available").message().quit().fin("C").build())
    assert verdict(s) == "ok"
    assert any(n.code == "starttls-refused-note" for n in s.notes)


def test_starttls_not_followed_plaintext() -> None:
    b = upto_starttls()
    b.tls = False
    s = b.not_tls("C", "EHLO client.example\\r\\n").wait(10).fin("S").build()
    assert verdict(s) == "starttls-not-followed"
    assert "plaintext instead of a ClientHello" in s.verdict.summary


def test_starttls_not_followed_silence() -> None:
    s = upto_starttls().wait(30).fin("S").build()
    assert verdict(s) == "starttls-not-followed"
    assert "sent nothing" in s.verdict.summary
    assert "30.0 s" in s.verdict.summary


def test_starttls_then_handshake_is_not_not_followed() -> None:
    s = upto_starttls().tls12_handshake().app_data("C").app_data("S").fin("C").build()
    assert verdict(s) == "ok-no-mail"  # one record each way: too little for a message
    assert not any(n.code.startswith("starttls") for n in s.notes)


def test_plaintext_server_on_port_465() -> None:
    b = SessionBuilder(server=("198.51.100.26", 465), implicit_tls=True).handshake()
    s = (b.not_tls("S", "220 mx.example ESMTP Postfix\\r\\n").client_hello().fin("C").build())
    assert verdict(s) == "tls-closed-during-handshake"
    assert "220 mx.example ESMTP" in s.verdict.summary
    assert "smtpd_tls_wrappermode" in s.verdict.summary


def test_rst_after_the_fin_of_a_finished_implicit_tls_dialogue_is_tidy_up() -> None:
    """Real swaks on 465: the server's close_notify arrives after the client closed, the
    client's stack answers RST.  Inside TLS the 221 is invisible: not a reset."""
    b = SessionBuilder(server=("198.51.100.25", 465), implicit_tls=True).handshake()
    b.tls13_handshake()
    for _ in range(3):  # the dialogue: each client record answered
        b.app_data("C").app_data("S")
    b.alert("S", description=None, level=None).fin("S").rst("C")  # server closes first
    assert verdict(b.build()) == "ok"


def test_rst_in_the_middle_of_a_tls_dialogue_is_still_a_reset() -> None:
    b = SessionBuilder(server=("198.51.100.25", 465), implicit_tls=True).handshake()
    b.tls13_handshake().app_data("C").app_data("S").app_data("C").app_data("S").rst("S")
    assert verdict(b.build()) == "tcp-reset"


# -- what record sizes can hold (issue 16) ---------------------------------------------

def test_encrypted_ehlo_and_quit_only_is_ok_no_mail() -> None:
    """EHLO (42-byte record) then QUIT (23): 6 bytes after the EHLO, no room for a message."""
    s = (upto_starttls().tls13_handshake().app_data("S", length=250).app_data("C", length=42)
         .app_data("S", length=168).app_data("C", length=23).app_data("S", length=32)
         .fin("S").fin("C").build())
    assert verdict(s) == "ok-no-mail"
    assert "at most 31 bytes of SMTP, 6 of them after its first command" in s.verdict.summary
    assert "Inferred from the record sizes" in s.verdict.summary


def test_encrypted_message_sized_dialogue_stays_ok() -> None:
    """swaks' records in the starttls-ok sample: MAIL 49, RCPT 45, DATA 23, body 276, QUIT 23."""
    b = upto_starttls().tls13_handshake().app_data("S", length=250).app_data("C", length=42)
    for c_len, s_len in ((49, 31), (45, 31), (23, 54), (276, 54), (23, 32)):
        b = b.app_data("S", length=168) if c_len == 49 else b
        b = b.app_data("C", length=c_len).app_data("S", length=s_len)
    s = b.fin("C").fin("S").build()
    assert verdict(s) == "ok"
    assert "cannot show whether a message was accepted" in s.verdict.summary


def test_plaintext_client_on_port_465_is_a_handshake_that_never_began() -> None:
    """not-tls-on-465.pcap: an EHLO to a wrapper-mode port, the server's RST; not tcp-reset."""
    b = SessionBuilder(server=("198.51.100.26", 465), implicit_tls=True).handshake()
    s = b.not_tls("C", "EHLO client.example\\r\\n").rst("S").build()
    assert verdict(s) == "tls-closed-during-handshake"
    assert "are not TLS" in s.verdict.summary and "no handshake began" in s.verdict.summary
