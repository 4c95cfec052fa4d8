"""Plaintext SMTP verdicts: ok, ok-no-mail, deferred, rejected, timeout, pipelining."""

from __future__ import annotations

from pcapsmtp.rules import diagnose
from pcapsmtp.timeline import Session
from tests.timeline_builders import SessionBuilder, healthy


def verdict(s: Session) -> str:
    diagnose(s, strict=True)
    return s.verdict.code


def frames(s: Session) -> list[int | None]:
    return [e.frame for e in s.verdict.evidence]


def test_delivery_with_quit_is_ok() -> None:
    s = healthy().fin("C").fin("S").build()
    assert verdict(s) == "ok"
    assert "1 message(s) accepted" in s.verdict.summary
    assert "221" in s.verdict.summary
    final = [e for e in s.events if e.text.startswith("250 2.0.0 Ok: queued")][0]
    assert final.frame in frames(s)


def test_rst_after_221_is_still_ok() -> None:
    s = healthy().rst("C").build()
    assert verdict(s) == "ok"


def test_ehlo_then_quit_is_ok_no_mail() -> None:
    s = SessionBuilder().handshake().banner().ehlo().quit().fin("C").fin("S").build()
    assert verdict(s) == "ok-no-mail"
    assert "QUIT" in s.verdict.summary


def test_no_mail_without_syn_is_not_claimed() -> None:
    b = SessionBuilder().banner().ehlo().quit().fin("C")
    s = b.build()
    assert s.syn_seen is False
    assert verdict(s) == "capture-incomplete"


def test_rcpt_rejected() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<nobody@example.net>").reply(550, "5.1.1 <nobody@example.net>: "
                                                   "Recipient address rejected")
         .quit().fin("C").fin("S").build())
    assert verdict(s) == "smtp-rejected"
    rej = [e for e in s.events if e.text.startswith("550")][0]
    assert rej.frame in frames(s)
    assert "RCPT TO:<nobody@example.net>" in s.verdict.summary
    assert "550 5.1.1" in s.verdict.summary


def test_one_rejected_recipient_then_delivery_is_ok() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<x@example.net>").reply(550, "5.1.1 unknown")
         .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok")
         .cmd("DATA").reply(354, "go").body().reply(250, "2.0.0 queued")
         .quit().fin("C").build())
    assert verdict(s) == "ok"


def test_greylisting_is_deferred() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<b@example.net>").reply(450, "4.2.0 Greylisted, try again later")
         .quit().fin("C").build())
    assert verdict(s) == "smtp-deferred"
    assert "Greylisted" in s.verdict.summary


def test_reply_without_code_uses_enhanced_class() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok")
         .cmd("DATA").reply(354, "go").body()
         .reply(None, "4.7.0 [IPTS04] Messages temporarily deferred")
         .fin("S").build())
    assert verdict(s) == "smtp-deferred"
    assert "without its code" in s.verdict.summary


def test_data_rejected_after_earlier_failures_and_rset() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<x@bad>").reply(553, "5.1.8 Domain of sender does not exist")
         .cmd("RSET").reply(250, "2.0.0 Reset")
         .message(final=(554, "5.7.1 Message contains virus: rejected"))
         .quit().fin("C").build())
    assert verdict(s) == "smtp-rejected"
    assert "554 5.7.1" in s.verdict.summary


def test_banner_554_is_rejected_at_greeting() -> None:
    s = (SessionBuilder().handshake().banner(554, "5.7.1 Service unavailable; client blocked")
         .quit().fin("S").build())
    assert verdict(s) == "smtp-rejected"
    assert "greeting" in s.verdict.summary


def test_idle_after_accepted_message_is_ok_with_a_timeout_note() -> None:
    """Issue 16: the message went through; the client only never said QUIT."""
    s = (SessionBuilder().handshake().banner().ehlo().message().wait(300)
         .reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="")
         .fin("S").build())
    assert verdict(s) == "ok"
    assert "gave up with `421 4.4.2 mx.example Error: timeout exceeded`" in s.verdict.summary
    note = next(n for n in s.notes if n.code == "client-idle-timeout")
    assert "client went silent after END-OF-MESSAGE" in note.summary
    assert "300" in note.summary and "Postfix" in note.summary
    assert "1 message(s) had been accepted" in note.summary


def test_exchange_451_timeout_after_message_is_not_deferred() -> None:
    """Exchange's 451 4.7.0 is its idle timeout, not a policy deferral."""
    s = (SessionBuilder().handshake().banner().ehlo().message().wait(60)
         .reply(451, "4.7.0 Timeout waiting for client input", answers="")
         .fin("S").build())
    assert verdict(s) == "ok"
    assert not any(n.code.startswith("smtp-deferred") for n in s.notes)
    assert any(n.code == "client-idle-timeout" and "Exchange" in n.summary for n in s.notes)


def test_client_idle_before_any_command_is_a_timeout_even_if_it_closes_first() -> None:
    """The 421 after the greeting; the client hangs up first on reading it."""
    s = (SessionBuilder().handshake().banner().wait(300)
         .reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="")
         .fin("C").fin("S").build())
    assert verdict(s) == "timeout"
    assert s.verdict.summary.startswith("The client went silent after the greeting")


def test_exim_timeout_wording_is_named() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().wait(30)
         .reply(421, "mx.example: SMTP command timeout - closing connection", answers="")
         .fin("S").build())
    assert verdict(s) == "timeout"
    assert "Exim's timeout reply" in s.verdict.summary


def test_a_451_that_is_not_a_timeout_still_defers() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().cmd("MAIL FROM:<a@example.org>")
         .reply(451, "4.3.0 Temporary lookup failure").quit().fin("S").build())
    assert verdict(s) == "smtp-deferred"


def test_server_silent_after_command_client_closes() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").wait(120).fin("C").build())
    assert verdict(s) == "timeout"
    assert s.verdict.summary.startswith("The server went silent after the client's MAIL")
    assert "server side" in s.verdict.next_step


def test_short_pause_is_not_a_timeout() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().wait(1.0).fin("C").build())
    assert verdict(s) == "ok-no-mail"


def test_silence_with_capture_gap_is_not_a_timeout() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").wait(60).gap("S", 40).fin("C").build())
    assert verdict(s) != "timeout"


def test_early_talker() -> None:
    s = (SessionBuilder().handshake().cmd("EHLO bot").banner()
         .reply(554, "5.5.0 SMTP protocol synchronization error", answers="EHLO")
         .fin("S").build())
    assert verdict(s) == "pipelining-violation"
    assert "before the server's greeting" in s.verdict.summary
    assert s.events[2].frame in frames(s)


def test_unadvertised_pipelining_beats_rejection() -> None:
    s = (SessionBuilder().handshake().banner()
         .cmd("HELO").reply(501, "5.5.4 Syntax: HELO hostname")
         .cmd("MAIL FROM:<a@example.org>").cmd("RCPT TO:<b@example.net>")
         .reply(503, "5.5.1 Error: send HELO/EHLO first")
         .reply(503, "5.5.1 Error: need MAIL command")
         .fin("C").build())
    assert verdict(s) == "pipelining-violation"
    assert "had not advertised PIPELINING" in s.verdict.summary
    assert any(n.code == "smtp-rejected" for n in s.notes)


def test_advertised_pipelining_is_fine() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").cmd("RCPT TO:<b@example.net>").cmd("DATA")
         .reply(250, "2.1.0 Ok").reply(250, "2.1.5 Ok").reply(354, "go")
         .body().reply(250, "2.0.0 queued").quit().fin("C").build())
    assert verdict(s) == "ok"
    assert not any(n.code.startswith("pipelining") for n in s.notes)


def test_body_before_354_is_a_violation() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok")
         .cmd("DATA").body(complete=False).reply(354, "go")
         .reply(554, "5.5.0 SMTP synchronization error", answers="DATA").fin("S").build())
    assert verdict(s) == "pipelining-violation"
    assert "before the 354" in s.verdict.summary


def test_early_talk_tolerated_with_delivery_is_ok_with_note() -> None:
    s = (SessionBuilder().handshake().cmd("EHLO early").banner()
         .reply(250, "mx.example", answers="EHLO").message().quit().build(open_at_end=True))
    assert verdict(s) == "ok"  # 221 ends the dialogue even if the capture stops before FIN
    assert any(n.code == "pipelining-tolerated" for n in s.notes)


def upto_354(data_frame: list[int]) -> SessionBuilder:
    b = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok").cmd("DATA"))
    data_frame.append(b.last.frame)
    return b.reply(354, "End data with <CR><LF>.<CR><LF>")


def test_body_starting_in_a_gap_is_not_sent_before_354() -> None:
    """pmtu-blackhole.pcap: the body's first byte is in a hole, so its first_frame names the
    DATA frame (the last one before the hole); that is not the body riding with DATA."""
    data: list[int] = []
    b = upto_354(data).gap("C", length=5792, reason="end-of-capture", offset=91)
    b.body(size=5948, same_frame=True, first_frame=data[0], start=91, end=6042)
    s = b.wait(5).reply(421, "4.4.2 mx.example Error: timeout exceeded").fin("S").build()
    diagnose(s, strict=True)
    assert s.verdict.code != "pipelining-violation"
    assert not any(n.code.startswith("pipelining") for n in s.notes)


def test_body_in_the_data_segment_without_a_gap_is_still_early() -> None:
    data: list[int] = []
    b = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
         .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok").cmd("DATA"))
    data.append(b.last.frame)
    b.reply(354, "go").body(size=300, first_frame=data[0], start=91, end=391)
    s = b.reply(554, "5.5.0 SMTP synchronization error", answers="BODY").fin("S").build()
    assert verdict(s) == "pipelining-violation"
    assert "before the 354" in s.verdict.summary
