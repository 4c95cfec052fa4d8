"""TCP, middlebox and capture verdicts; precedence and the fallback."""

from __future__ import annotations

import pytest

from pcapsmtp.rules import (
    PRECEDENCE,
    VERDICT_CODES,
    Finding,
    choose_verdict,
    diagnose,
    run_rules,
)
from pcapsmtp.timeline import Session
from tests.timeline_builders import SessionBuilder, healthy


def verdict(s: Session) -> str:
    diagnose(s, strict=True)
    return s.verdict.code


def frames(s: Session) -> list[int | None]:
    return [e.frame for e in s.verdict.evidence]


# -- TCP ---------------------------------------------------------------------------------

def test_syns_never_answered() -> None:
    s = SessionBuilder().syn().wait(1).syn(repeat=True).wait(2).syn(repeat=True).build()
    assert verdict(s) == "tcp-no-answer"
    assert "3 SYN(s)" in s.verdict.summary
    assert frames(s) == [1, 2, 3]
    assert "fail2ban" in s.verdict.next_step


def test_syn_answered_with_rst() -> None:
    s = SessionBuilder().syn().rst("S").build()
    assert verdict(s) == "tcp-refused"
    assert 2 in frames(s)


def test_client_data_without_server_packets_is_one_direction_not_no_answer() -> None:
    s = SessionBuilder().syn().cmd("EHLO x").cmd("MAIL FROM:<a@b>").fin("C").build()
    diagnose(s, strict=True)
    assert s.verdict.code != "tcp-no-answer"
    text = " ".join([s.verdict.summary] + [n.summary for n in s.notes])
    assert "only the client's packets were captured" in text


def test_server_reset_mid_dialogue() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().cmd("MAIL FROM:<a@example.org>")
         .rst("S").build())
    assert verdict(s) == "tcp-reset"
    assert "The server reset the connection" in s.verdict.summary
    assert "MAIL FROM" in s.verdict.summary


def test_rst_after_orderly_fin_is_not_a_reset() -> None:
    s = SessionBuilder().handshake().banner().ehlo().fin("C").rst("S").build()
    assert verdict(s) == "ok-no-mail"


def test_server_fin_without_greeting_then_rst() -> None:
    s = (SessionBuilder().handshake().fin("S").cmd("QUIT").rst("S").build())
    assert verdict(s) == "tcp-reset"
    assert "without a greeting" in s.verdict.summary


def test_no_greeting_then_client_gives_up() -> None:
    s = SessionBuilder().handshake().wait(30).fin("C").build()
    assert verdict(s) == "timeout"
    assert "no greeting" in s.verdict.summary


def test_pmtu_blackhole() -> None:
    b = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>").reply(250, "ok")
         .cmd("RCPT TO:<b@example.net>").reply(250, "ok")
         .cmd("DATA").reply(354, "go").body(complete=False))
    first = b.last.frame
    b.wait(1).retrans("C", 200, 1448, first).wait(2).retrans("C", 200, 1448, first)
    b.wait(4).retrans("C", 200, 1448, first)
    s = b.wait(60).rst("C").build()
    assert verdict(s) == "pmtu-blackhole"
    assert "1448-byte segment" in s.verdict.summary
    assert "3 times" in s.verdict.summary
    assert "354" in s.verdict.evidence[0].what


def body_sent_after_354() -> SessionBuilder:
    return (SessionBuilder().handshake().banner().ehlo()
            .cmd("MAIL FROM:<a@example.org>").reply(250, "2.1.0 Ok")
            .cmd("RCPT TO:<b@example.net>").reply(250, "2.1.5 Ok")
            .cmd("DATA").reply(354, "End data with <CR><LF>.<CR><LF>"))


def test_pmtu_from_the_client_side_past_the_servers_421() -> None:
    """pmtu-blackhole.client.pcap: the server's 421 and FIN do not acknowledge the segment
    (the client still retransmits it afterwards); the capture ends before the client's FIN."""
    b = body_sent_after_354().body(size=5948, start=91, end=6042)
    first = b.last.frame
    for pause in (0.2, 0.4, 0.8, 1.6):
        b.wait(pause).retrans("C", 91, 1448, first)
    b.wait(2).reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="BODY")
    said = b.last.frame
    b.fin("S").wait(1.5).retrans("C", 91, 1448, first)
    last = b.last.frame
    s = b.build(open_at_end=True)
    assert verdict(s) == "pmtu-blackhole"
    summary = s.verdict.summary
    assert "1448-byte segment" in summary and "retransmitted it 5 times" in summary
    assert f"last frame {last}," in summary
    assert f"said `421 4.4.2 mx.example Error: timeout exceeded` (frame {said}," in summary
    assert "354" in s.verdict.evidence[0].what
    assert last in frames(s)


def ignored_icmp(mtu: int = 1280, to: str = "C", pause_before: float = 0.05,
                 ip_version: int = 4) -> tuple[Session, int]:
    """The client's 1448-byte segment, an ICMP too-big to ``to``, retransmissions, the
    server's 421: (session, frame of the ICMP)."""
    b = body_sent_after_354().body(size=5948, start=91, end=6042)
    first = b.last.frame
    b.wait(pause_before).icmp_too_big(to, mtu=mtu, offset=91, ip_version=ip_version)
    icmp = b.last.frame
    for pause in (0.2, 0.4, 0.8):
        b.wait(pause).retrans("C", 91, 1448, first)
    b.wait(2).reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="BODY")
    return b.fin("S").build(open_at_end=True), icmp


def test_pmtu_with_the_icmp_seen_blames_the_sender() -> None:
    """The ICMP reached the capture point and full-size segments were still resent: the
    client's own firewall (or its PMTU setting), not the path, lost the message."""
    s, icmp = ignored_icmp()
    assert verdict(s) == "pmtu-blackhole"
    summary = s.verdict.summary
    assert ("ICMP fragmentation needed (next-hop MTU 1280) from 192.0.2.1 reached the capture "
            f"point (frame {icmp},") in summary
    assert "the client kept retransmitting full-size segments after it" in summary
    assert "the client dropped or ignored it" in summary
    assert "lost or filtered" not in summary  # the path is not blamed
    assert icmp in frames(s) and frames(s) == sorted(frames(s))
    step = s.verdict.next_step
    assert step.startswith("on the client (203.0.113.40): allow ICMP type 3 code 4")
    assert "ip_no_pmtu_disc" in step and "capture on the server side" not in step
    assert "firewall" in s.verdict.cannot_prove


def test_pmtu_without_icmp_blames_the_path() -> None:
    """The same session with no ICMP in the capture: the message was lost on the path."""
    b = body_sent_after_354().body(size=5948, start=91, end=6042)
    first = b.last.frame
    for pause in (0.2, 0.4, 0.8):
        b.wait(pause).retrans("C", 91, 1448, first)
    b.wait(2).reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="BODY")
    s = b.fin("S").build(open_at_end=True)
    assert verdict(s) == "pmtu-blackhole"
    assert "the ICMP 'fragmentation needed' lost or filtered" in s.verdict.summary
    assert "reached the capture point" not in s.verdict.summary
    assert s.verdict.next_step.startswith("test with `ping -M do")
    assert "a capture on the server side shows the hole" in s.verdict.next_step


@pytest.mark.parametrize("why,kw", [
    ("addressed to the server, not the sender", {"to": "S"}),
    ("an MTU the retransmitted segments fit in", {"mtu": 1500}),
    ("IPv6 headers: 1448 + 60 bytes fit in 1508", {"mtu": 1508, "ip_version": 6}),
])
def test_icmp_that_proves_nothing_keeps_the_path_wording(why: str, kw: dict) -> None:
    s, _ = ignored_icmp(**kw)
    assert verdict(s) == "pmtu-blackhole", why
    assert "lost or filtered" in s.verdict.summary, why
    assert "reached the capture point" not in s.verdict.summary, why


def test_icmp_after_the_last_retransmission_is_not_used() -> None:
    b = body_sent_after_354().body(size=5948, start=91, end=6042)
    first = b.last.frame
    for pause in (0.2, 0.4, 0.8):
        b.wait(pause).retrans("C", 91, 1448, first)
    b.wait(0.1).icmp_too_big("C", offset=91)
    b.wait(2).reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="BODY")
    s = b.fin("S").build(open_at_end=True)
    assert verdict(s) == "pmtu-blackhole"
    assert "lost or filtered" in s.verdict.summary


def test_icmpv6_packet_too_big_is_named_so() -> None:
    s, _ = ignored_icmp(ip_version=6)
    assert verdict(s) == "pmtu-blackhole"
    assert "ICMPv6 Packet Too Big (MTU 1280) from 192.0.2.1" in s.verdict.summary


def test_icmp_event_is_no_server_word() -> None:
    """Toward the client it points like a server event, but the server sent nothing: a
    session that heard only the router is still unanswered; one that worked stays ok."""
    b = SessionBuilder().syn().icmp_too_big("C").wait(1).syn(repeat=True)
    assert verdict(b.build()) == "tcp-no-answer"
    s = healthy().icmp_too_big("C").fin("C").build()
    assert verdict(s) == "ok"


def test_full_size_retransmission_then_answered_is_not_pmtu() -> None:
    b = body_sent_after_354().body(size=5948)
    first = b.last.frame
    b.wait(0.2).retrans("C", 91, 1448, first).wait(0.4).retrans("C", 91, 1448, first)
    s = b.reply(250, "2.0.0 Ok: queued").quit().fin("C").build()
    assert verdict(s) == "ok"


def test_pmtu_from_the_server_side_hole_never_filled() -> None:
    """pmtu-blackhole.pcap: four full-size segments missing, the small tail arrived, the
    server waited and timed out."""
    b = body_sent_after_354().gap("C", length=5792, reason="end-of-capture", offset=91)
    hole = b.last.frame
    b.body(size=5948, same_frame=True, start=91, end=6042)
    b.wait(5).reply(421, "4.4.2 mx.example Error: timeout exceeded", answers="BODY")
    said = b.last.frame
    s = b.fin("S").build(open_at_end=True)
    assert verdict(s) == "pmtu-blackhole"
    summary = s.verdict.summary
    assert summary.startswith("A hole of 5,792 client bytes (4 full-size segments of 1448 "
                              "bytes) in the message body never arrived, while the 159 bytes "
                              f"after it did (frame {hole},")
    assert "never covered the hole" in summary
    assert f"(frame {said}," in summary
    assert frames(s) == [hole, said]
    assert "client side" in s.verdict.next_step
    assert not any(n.code.startswith("pipelining") for n in s.notes)


@pytest.mark.parametrize("reason,length,answer", [
    ("acked-unseen", 5792, (421, "4.4.2 timeout exceeded")),  # the server got them
    ("snaplen", 5792, (421, "4.4.2 timeout exceeded")),  # the capture cut them
    ("end-of-capture", 1448, (421, "4.4.2 timeout exceeded")),  # one segment: plain loss
    ("end-of-capture", 5792, (250, "2.0.0 Ok: queued")),  # the server was not waiting
])
def test_holes_that_are_not_pmtu(reason: str, length: int, answer: tuple[int, str]) -> None:
    b = body_sent_after_354().gap("C", length=length, reason=reason, offset=91)
    b.body(size=5948, same_frame=True, start=91, end=6042)
    s = b.wait(5).reply(*answer, answers="BODY").fin("S").build(open_at_end=True)
    diagnose(s, strict=True)
    assert s.verdict.code != "pmtu-blackhole"


def test_small_retransmissions_are_not_pmtu() -> None:
    s = (healthy().retrans("C", 10, 40).retrans("C", 10, 40).fin("C").build())
    assert verdict(s) == "ok"


# -- middlebox ---------------------------------------------------------------------------

def test_pix_split_rcpt_beats_the_500_after_it() -> None:
    b = (SessionBuilder().handshake().banner().ehlo()
         .cmd("MAIL FROM:<a@example.org>")
         .cmd("XXXX TO:<b@example.net>", split=2))
    cmd = b.last
    s = (b.reply(250, "2.1.0 Ok", answers="MAIL")
         .reply(500, "5.5.2 Error: command not recognized", answers="XXXX")
         .quit().fin("C").build())
    assert verdict(s) == "middlebox-rewrite"
    summary = s.verdict.summary
    assert f"bytes 0-1 of the line came in frame {cmd.first_frame}" in summary
    assert f"bytes 2-3 in frame {cmd.frame}" in summary
    assert "byte 2" in summary
    assert "RCPT" in summary
    assert "500 5.5.2" in summary
    assert any(n.code == "smtp-rejected" for n in s.notes)


def test_asterisk_banner() -> None:
    s = (SessionBuilder().handshake().banner(220, "*****0****2*****").ehlo().message().quit()
         .fin("C").build())
    assert verdict(s) == "middlebox-rewrite"
    assert "asterisks" in s.verdict.summary
    assert any(n.code == "ok" for n in s.notes)


def test_masked_starttls_keyword() -> None:
    s = (SessionBuilder().handshake().banner()
         .ehlo(caps=("PIPELINING", "XXXXXXXA", "8BITMIME")).message().quit().fin("C").build())
    assert verdict(s) == "middlebox-rewrite"
    assert "XXXXXXXA" in s.verdict.summary
    assert "STARTTLS" in s.verdict.summary


def test_ordinary_x_words_are_not_masks() -> None:
    s = (SessionBuilder().handshake().banner().ehlo(caps=("XCLIENT", "XFORWARD"))
         .message().quit().fin("C").build())
    assert verdict(s) == "ok"


# -- capture -----------------------------------------------------------------------------

def test_snaplen_cut_advises_s0() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().cmd("MAIL FROM:<a@example.org>")
         .gap("S", 1200, reason="snaplen").build(open_at_end=True))
    assert verdict(s) == "capture-incomplete"
    assert "snaplen" in s.verdict.summary
    assert "tcpdump -s 0" in s.verdict.next_step


def test_started_before_capture_but_delivery_seen_is_ok_with_note() -> None:
    s = (SessionBuilder().banner().ehlo().message().quit().fin("C").build())
    assert verdict(s) == "ok"
    assert any(n.code == "capture-incomplete" and "before the capture" in n.summary
               for n in s.notes)


def test_open_at_end() -> None:
    s = SessionBuilder().handshake().banner().ehlo().build()
    assert verdict(s) == "capture-incomplete"
    assert "still open" in s.verdict.summary


def test_unacknowledged_gap_is_not_blamed_on_the_capture_alone() -> None:
    s = SessionBuilder().handshake().banner().ehlo().gap("C", 54, "sent-unseen").build()
    assert verdict(s) == "capture-incomplete"
    assert "may have been lost before this capture point" in s.verdict.summary
    assert "capture at the sender" in s.verdict.next_step
    s = SessionBuilder().handshake().banner().ehlo().gap("C", 54, "acked-unseen").build()
    assert verdict(s) == "capture-incomplete"
    assert "before this capture point" not in s.verdict.summary
    assert "tcpdump -B" in s.verdict.next_step


# -- the machinery -----------------------------------------------------------------------

def test_precedence_covers_every_code_once() -> None:
    assert sorted(PRECEDENCE) == sorted(VERDICT_CODES)
    assert len(set(PRECEDENCE)) == len(PRECEDENCE)
    assert PRECEDENCE[-1] == "capture-incomplete"


def test_choose_verdict_uses_precedence_and_keeps_losers_as_notes() -> None:
    a = Finding("smtp-rejected", "550", verdict=True)
    b = Finding("middlebox-rewrite", "XXXX", verdict=True)
    c = Finding("retransmissions", "a note")
    best, notes = choose_verdict([a, b, c])
    assert best is b
    assert a in notes and c in notes and not a.verdict


def test_fallback_when_no_rule_decides() -> None:
    s = (SessionBuilder().handshake().banner().ehlo()
         .add("", "note", "something", what="x").build(open_at_end=False))
    diagnose(s, strict=True)
    assert s.verdict is not None
    assert s.verdict.code in VERDICT_CODES


def test_broken_rule_becomes_internal_note() -> None:
    def broken(_s: Session) -> None:
        raise ValueError("boom")

    s = healthy().fin("C").build()
    out = run_rules(s, rules=[broken])
    assert out[0].code == "internal-error"
    with pytest.raises(ValueError):
        run_rules(s, rules=[broken], strict=True)


def test_to_dict_is_json_shaped() -> None:
    s = healthy().fin("C").build()
    diagnose(s, strict=True)
    d = s.verdict.to_dict()
    assert d["code"] == "ok"
    assert set(d) >= {"code", "summary", "evidence"}
    assert d["evidence"][0]["frame"] == s.verdict.evidence[0].frame
    assert isinstance(d["evidence"][0]["time"], float)


# -- TLS teardown by RST (issue 16) --------------------------------------------------------

def _tls13_dialogue() -> SessionBuilder:
    return (SessionBuilder().handshake().banner().ehlo().starttls().tls13_handshake()
            .app_data("S", length=200).app_data("C", length=60).app_data("S", length=120)
            .app_data("C", length=90).app_data("S", length=60).app_data("C", length=300)
            .app_data("S", length=60).app_data("C", length=30).app_data("S", length=40))


def test_rst_after_servers_close_notify_is_teardown_not_reset() -> None:
    """close_notify, then RST without FIN (unread bytes at close): ordinary teardown."""
    s = _tls13_dialogue().alert("S", description=0, level=1).rst("S").build()
    assert verdict(s) == "ok"
    note = next(n for n in s.notes if n.code == "reset-after-close-notify")
    assert "its own TLS close alert" in note.summary
    assert not any(n.code == "tcp-reset" for n in s.notes)


def test_rst_without_any_close_alert_is_still_a_reset() -> None:
    s = _tls13_dialogue().rst("S").build()
    assert verdict(s) == "tcp-reset"
    assert not any(n.code == "reset-after-close-notify" for n in s.notes)


def test_rst_mid_handshake_is_not_called_teardown() -> None:
    """No dialogue ran inside TLS: an alert then RST there is a handshake failure."""
    s = (SessionBuilder().handshake().banner().ehlo().starttls().client_hello()
         .alert("S", description=40).rst("S").build())
    assert verdict(s) != "ok"
    assert not any(n.code == "reset-after-close-notify" for n in s.notes)


# -- the PIX split seen from the sending side (issue 16) -----------------------------------

def _pipelined_split(reply: tuple[int, str]) -> Session:
    return (SessionBuilder().handshake().banner().ehlo()
            .cmd("MAIL FROM:<a@example.org>").cmd("RCPT TO:<b@example.net>")
            .reply(250, "2.1.0 Ok").reply(250, "2.1.5 Ok")
            .cmd("RCPT TO:<c@example.net>", split=2).reply(*reply)
            .quit().fin("S").build())


def test_split_well_formed_command_answered_not_recognized_is_a_middlebox() -> None:
    s = _pipelined_split((500, "5.5.2 Error: command not recognized"))
    assert verdict(s) == "middlebox-rewrite"
    assert "crossed a TCP segment boundary (bytes 0-1 in frame" in s.verdict.summary
    assert "server side" in s.verdict.next_step and "compare" in s.verdict.cannot_prove


def test_split_command_answered_normally_is_no_middlebox() -> None:
    s = _pipelined_split((250, "2.1.5 Ok"))
    assert verdict(s) == "ok-no-mail"
    assert not any(n.code == "middlebox-rewrite" for n in s.notes)


def test_unsplit_command_not_recognized_is_only_a_rejection() -> None:
    s = (SessionBuilder().handshake().banner().ehlo().cmd("RCPT TO:<c@example.net>")
         .reply(500, "5.5.2 Error: command not recognized").quit().fin("S").build())
    assert verdict(s) == "smtp-rejected"
