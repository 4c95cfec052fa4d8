"""The whole pipeline on crafted captures: capture -> reassembly -> SMTP dialogue.

Crafted with scapy because these are TCP corners (retransmission, reordering,
overlaps, gaps, wrap-around, a missing SYN) that no real stack produces on
demand; each expects an exact dialogue.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pcapsmtp.analyze import analyze
from pcapsmtp.timeline import Session
from tests.craft_session import Conversation, simple_session, up_to_354

SIMPLE_DIALOGUE = [
    ("S", "220 mx.lab.example ESMTP Postfix"),
    ("C", "EHLO client.lab.example"),
    ("S", "250-mx.lab.example"),
    ("C", "MAIL FROM:<a@lab.example>"),
    ("S", "250 2.1.0 Ok"),
    ("C", "RCPT TO:<b@lab.example>"),
    ("S", "250 2.1.5 Ok"),
    ("C", "DATA"),
    ("S", "354 End data with <CR><LF>.<CR><LF>"),
    ("C", "[message body: 21 bytes, ended by '.']"),
    ("S", "250 2.0.0 Ok: queued as 1234"),
    ("C", "QUIT"),
    ("S", "221 2.0.0 Bye"),
]


def dialogue(session: Session) -> list[tuple[str, str]]:
    return [(e.direction, e.text) for e in session.events if e.kind.startswith("smtp-")]


def only_session(path: Path) -> Session:
    result = analyze(str(path))
    assert len(result.sessions) == 1, [s.client for s in result.sessions]
    return result.sessions[0]


def kinds(session: Session, kind: str) -> list:
    return [e for e in session.events if e.kind == kind]


def test_healthy_session_dialogue_and_frames(tmp_path: Path) -> None:
    conv = simple_session()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert dialogue(s) == SIMPLE_DIALOGUE
    assert s.client == ("192.0.2.10", 40000) and s.server == ("198.51.100.25", 25)
    assert s.syn_seen and not s.open_at_end
    # Frames: 3 handshake packets, then the banner is frame 4 and EHLO frame 5.
    banner, ehlo = [e for e in s.events if e.kind.startswith("smtp-")][:2]
    assert (banner.frame, ehlo.frame) == (4, 5)
    ehlo_reply = next(e for e in s.events if e.fields.get("answers") == "EHLO")
    assert ehlo_reply.fields["capabilities"] == ["PIPELINING", "8BITMIME"]
    assert [e.direction for e in kinds(s, "tcp-fin")] == ["C", "S"]


def test_retransmission_is_counted_not_duplicated(tmp_path: Path) -> None:
    conv = simple_session()
    pkts = list(conv.packets)
    rcpt = next(i for i, p in enumerate(pkts) if b"RCPT" in bytes(p.payload))
    again = copy.deepcopy(pkts[rcpt])
    again.time = pkts[rcpt].time + 0.2
    pkts.insert(rcpt + 1, again)
    s = only_session(conv.write(tmp_path / "x.pcap", pkts))
    assert dialogue(s) == SIMPLE_DIALOGUE
    (rtx,) = kinds(s, "tcp-retransmission")
    assert rtx.frame == rcpt + 2 and rtx.fields["length"] == len(b"RCPT TO:<b@lab.example>\r\n")
    assert s.stats.C.retransmissions == 1


def test_reordered_segments_reassemble_and_keep_their_frames(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    first, second = conv.client_sends(b"EHLO cli", b"ent.lab.example\r\n")
    conv.server_sends(b"250 mx\r\n")
    conv.close()
    pkts = list(conv.packets)
    i = pkts.index(first)
    pkts[i], pkts[i + 1] = pkts[i + 1], pkts[i]
    s = only_session(conv.write(tmp_path / "x.pcap", pkts))
    ehlo = next(e for e in s.events if e.kind == "smtp-command")
    assert ehlo.text == "EHLO client.lab.example"
    # The command's first byte came in frame 6 (sent first, captured second).
    assert ehlo.fields["segments"] == [[6, 0, 8], [5, 8, 17]]


def test_split_command_records_each_segment_boundary(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRC", b"PT TO:<c@y>\r\n")
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    cmds = kinds(s, "smtp-command")
    assert [c.text for c in cmds] == ["MAIL FROM:<a@x>", "RCPT TO:<b@y>", "RCPT TO:<c@y>"]
    assert "segments" not in cmds[0].fields
    assert cmds[2].fields["segments"] == [[5, 0, 2], [6, 2, 13]]


def test_overlap_with_different_bytes_keeps_first_and_the_evidence(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    (orig,) = conv.client_sends(b"RCPT TO:<b@y>\r\n")
    conv.server_sends(b"250 ok\r\n")
    conv.close()
    pkts = list(conv.packets)
    i = pkts.index(orig)
    changed = copy.deepcopy(orig)
    changed.payload.payload.remove_payload()
    changed.payload.payload.add_payload(b"XXXX TO:<b@y>\r\n")
    changed.time = orig.time + 0.001
    pkts.insert(i + 1, changed)
    s = only_session(conv.write(tmp_path / "x.pcap", pkts))
    assert [c.text for c in kinds(s, "smtp-command")] == ["RCPT TO:<b@y>"]
    (ov,) = kinds(s, "tcp-overlap")
    assert ov.fields["first"].startswith("RCPT") and ov.fields["second"].startswith("XXXX")
    assert ov.frame == i + 2


def test_overlap_with_same_bytes_delivers_only_the_new_part(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    start = conv.cseq
    (a,) = conv.client_sends(b"EHLO a\r\nMA")
    conv.cseq = start  # resend from the start, with more data
    conv.client_sends(b"EHLO a\r\nMAIL FROM:<x@y>\r\n")
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert [c.text for c in kinds(s, "smtp-command")] == ["EHLO a", "MAIL FROM:<x@y>"]
    assert not kinds(s, "tcp-overlap")


def test_gap_is_reported_and_the_parser_resynchronises(tmp_path: Path) -> None:
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    (lost,) = conv.client_sends(b"MAIL FROM:<x@y>\r\n")
    conv.client_sends(b"RCPT TO:<z@y>\r\n")
    conv.server_ack()  # the server acknowledges everything, lost bytes included
    conv.close()
    pkts = [p for p in conv.packets if p is not lost]
    s = only_session(conv.write(tmp_path / "x.pcap", pkts))
    (gap,) = kinds(s, "tcp-gap")
    assert gap.direction == "C" and gap.fields["length"] == len(b"MAIL FROM:<x@y>\r\n")
    assert [c.text for c in kinds(s, "smtp-command")] == ["EHLO a", "RCPT TO:<z@y>"]


def test_sequence_numbers_wrapping_around(tmp_path: Path) -> None:
    conv = simple_session(Conversation(cseq=2**32 - 30, sseq=2**32 - 5))
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert dialogue(s) == SIMPLE_DIALOGUE
    assert not kinds(s, "tcp-gap") and not kinds(s, "tcp-retransmission")


def test_missing_syn_still_gives_the_dialogue(tmp_path: Path) -> None:
    conv = simple_session()
    s = only_session(conv.write(tmp_path / "x.pcap", conv.packets[3:]))
    assert not s.syn_seen
    assert s.client == ("192.0.2.10", 40000)
    assert dialogue(s) == SIMPLE_DIALOGUE


def test_ipv6_session(tmp_path: Path) -> None:
    conv = simple_session(Conversation(client="2001:db8:1::10", server="2001:db8:2::25"))
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert s.ip_version == 6 and dialogue(s) == SIMPLE_DIALOGUE


def test_two_sessions_in_order_of_first_packet(tmp_path: Path) -> None:
    a = simple_session(Conversation(cport=40001))
    b = simple_session(Conversation(cport=40002, time=1_700_000_000.005))
    mixed = sorted(a.packets + b.packets, key=lambda p: p.time)
    result = analyze(str(a.write(tmp_path / "x.pcap", mixed)))
    assert [s.client[1] for s in result.sessions] == [40001, 40002]
    assert [s.id for s in result.sessions] == [1, 2]
    assert all(dialogue(s) == SIMPLE_DIALOGUE for s in result.sessions)


def test_port_465_is_tls_from_the_first_byte(tmp_path: Path) -> None:
    conv = Conversation(sport=465)
    conv.handshake()
    conv.client_sends(b"EHLO plaintext-where-tls-was-expected\r\n")
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert s.implicit_tls
    assert not kinds(s, "smtp-command")
    assert any(e.kind.startswith("tls-") for e in s.events)


def test_bytes_sent_but_never_seen_show_in_the_senders_sequence_numbers(tmp_path: Path) -> None:
    """The STARTTLS-stall clue: the client's bare ACK carries a seq past what arrived."""
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    conv.server_sends(b"250 mx\r\n")
    (lost,) = conv.client_sends(b"MAIL FROM:<x@y>\r\n")  # never reaches the capture point
    conv.client_ack()  # seq already beyond the lost bytes; the server never ACKs them
    pkts = [p for p in conv.packets if p is not lost]
    s = only_session(conv.write(tmp_path / "x.pcap", pkts))
    (gap,) = kinds(s, "tcp-gap")
    assert gap.direction == "C" and gap.fields["reason"] == "sent-unseen"
    assert gap.fields["length"] == len(b"MAIL FROM:<x@y>\r\n")
    assert gap.frame == len(pkts)


def _up_to_starttls_220() -> Conversation:
    """Handshake, greeting, EHLO, STARTTLS and its 220: where TLS should begin."""
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    conv.server_sends(b"250-mx\r\n250 STARTTLS\r\n")
    conv.client_sends(b"STARTTLS\r\n")
    conv.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    return conv


def _starttls_with_lost_hello(tmp_path: Path, seen_tail: bool) -> tuple[Session, list]:
    """STARTTLS accepted; the client's first TLS segment (the ClientHello's first 100
    bytes) never reaches the capture; ``seen_tail``: the rest of it does.  The server
    answers with a handshake_failure alert and closes."""
    from tests.tls_fixtures import client_hello_record, sni_ext

    hello = client_hello_record(list(range(0xC000, 0xC040)), [sni_ext("mx.example")])
    conv = _up_to_starttls_220()
    (lost,) = conv.client_sends(hello[:100])
    if seen_tail:
        conv.client_sends(hello[100:])
    conv.server_ack()  # acknowledges what it got: proves the bytes the capture lacks
    conv.server_sends(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure
    conv.close(client_first=False)
    pkts = [p for p in conv.packets if p is not lost]
    return only_session(conv.write(tmp_path / "x.pcap", pkts)), pkts


def test_tls_after_a_lost_first_segment_is_a_hole_not_a_record(tmp_path: Path) -> None:
    """The TLS parser starts where TLS starts (the end of STARTTLS), so bytes seen after
    a lost segment are the middle of a record: a desync at the frame that carried them,
    not "not TLS" -- which had the diagnosis say the client sent plaintext."""
    s, pkts = _starttls_with_lost_hello(tmp_path, seen_tail=True)
    tail_frame = 1 + pkts.index(next(p for p in pkts if bytes(p["TCP"].payload)[:1] == b"\xc0"))
    assert not kinds(s, "tls-not-tls")
    (desync,) = kinds(s, "tls-desync")
    assert (desync.direction, desync.fields["missing"], desync.frame) == ("C", 100, tail_frame)
    assert s.verdict.code == "tls-handshake-alert"
    assert "100 client bytes the capture does not hold" in s.verdict.summary
    assert "starttls-not-followed" not in {n.code for n in s.notes}


def test_a_lost_client_hello_is_not_called_a_silent_client(tmp_path: Path) -> None:
    """The server ACKed bytes the capture never saw: 'the client sent nothing' would be
    false; the capture-incomplete note names the missing bytes instead."""
    s, _ = _starttls_with_lost_hello(tmp_path, seen_tail=False)
    codes = {n.code for n in s.notes} | {s.verdict.code}
    assert "starttls-not-followed" not in codes and "capture-incomplete" in codes
    (gap,) = kinds(s, "tcp-gap")
    assert (gap.direction, gap.fields["length"]) == ("C", 100)


def test_a_starttls_session_cut_by_a_small_snaplen_is_incomplete_not_misread(
        tmp_path: Path) -> None:
    """tcpdump -s 96 keeps 42 bytes of TCP payload here: replies and the ClientHello are
    cut.  The greeting, the EHLO reply and the 220 to STARTTLS are still recognised, so
    TLS starts where it did, and the verdict says the capture is incomplete -- not that
    the client sent TLS without STARTTLS, nor that it talked before the greeting."""
    from tests.craft_pcap import pcap_header, pcap_record
    from tests.tls_fixtures import client_hello_record, sni_ext

    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx.lab.example ESMTP Postfix (Debian/GNU) ready\r\n")
    conv.client_sends(b"EHLO client.lab.example\r\n")
    conv.server_sends(b"250-mx.lab.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                      b"250-STARTTLS\r\n250 8BITMIME\r\n")
    conv.client_sends(b"STARTTLS\r\n")
    conv.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    conv.client_sends(client_hello_record(list(range(0xC000, 0xC040)),
                                          [sni_ext("mx.lab.example")]))
    conv.close(client_first=False)
    snap = 96
    records = []
    for p in conv.packets:
        raw = bytes(p)
        sec = int(p.time)
        records.append(pcap_record(sec, int((p.time - sec) * 1e6), raw[:snap],
                                   origlen=len(raw)))
    path = tmp_path / "snap96.pcap"
    path.write_bytes(pcap_header(snaplen=snap) + b"".join(records))
    s = only_session(path)
    replies = kinds(s, "smtp-reply")
    assert [r.fields["answers"] for r in replies] == ["CONNECT", "EHLO", "STARTTLS"]
    assert [e.direction for e in kinds(s, "smtp-tls-start")] == ["S", "C"]
    assert s.verdict.code == "capture-incomplete"
    assert "pipelining-violation" not in {n.code for n in s.notes}


def test_a_capture_holding_every_packet_twice_is_not_lossy(tmp_path: Path) -> None:
    """`tcpdump -i any` on a bridge (a mail server in containers) writes each packet
    twice, microseconds apart.  The report says so once per direction instead of
    calling half the packets retransmissions ('packet loss on the path')."""
    conv = simple_session()
    doubled = []
    for p in conv.packets:
        copy = p.copy()
        copy.time = p.time + 0.00003
        doubled += [p, copy]
    s = only_session(conv.write(tmp_path / "x.pcap", doubled))
    assert dialogue(s) == SIMPLE_DIALOGUE
    assert s.verdict.code == "ok"
    assert not kinds(s, "tcp-retransmission")
    codes = [n.code for n in s.notes]
    assert "retransmissions" not in codes
    assert codes.count("duplicate-packets") == 2
    assert s.stats.C.duplicates > 0 and s.stats.S.duplicates > 0


def _starttls_then(tmp_path: Path, client: bytes, server: bytes) -> Session:
    conv = _up_to_starttls_220()
    conv.client_sends(client)
    if server:
        conv.server_sends(server)
    conv.close(client_first=False)
    return only_session(conv.write(tmp_path / "x.pcap"))


def test_plaintext_both_ways_after_starttls_is_a_decrypted_capture(tmp_path: Path) -> None:
    """What a TLS-inspecting device exports (Arkime's smtp-decrypted.pcap): after the 220
    the client says EHLO again and the server answers, in plaintext.  Read as the dialogue
    inside TLS -- not as a client that ignored the 220."""
    s = _starttls_then(
        tmp_path,
        b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
        b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        b"250 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued as 1\r\n221 bye\r\n")
    assert s.verdict.code == "ok"
    assert "decrypted-capture" in {n.code for n in s.notes}
    assert not kinds(s, "tls-not-tls")
    inside = [e for e in s.events if e.fields.get("decrypted")]
    assert [e.text for e in inside if e.kind == "smtp-command"][:2] == [
        "(decrypted) EHLO a", "(decrypted) MAIL FROM:<a@b.example>"]
    assert all(e.tls for e in inside)
    assert [r.fields["answers"] for r in kinds(s, "smtp-reply") if r.fields.get("decrypted")] \
        == ["EHLO", "MAIL", "RCPT", "DATA", "BODY", "QUIT"]


def test_plaintext_from_the_client_only_is_still_starttls_not_followed(tmp_path: Path) -> None:
    """The server answers the client's plaintext with a TLS alert: no decrypted capture."""
    s = _starttls_then(tmp_path, b"EHLO a\r\n", b"\x15\x03\x03\x00\x02\x02\x32")
    codes = {n.code for n in s.notes} | {s.verdict.code}
    assert "starttls-not-followed" in codes and "decrypted-capture" not in codes
    assert kinds(s, "tls-not-tls")


def test_a_message_without_a_reply_is_not_a_session_without_mail(tmp_path: Path) -> None:
    """The body went out and the session closed in order, but no reply to the body is in
    the capture (suricata-verify's smtp-bug-5989 hides them behind differing first
    copies; here the server just sends none before both close): not 'ok-no-mail'."""
    conv = Conversation()
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    conv.server_sends(b"250 mx\r\n")
    up_to_354(conv)
    conv.client_sends(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    conv.server_ack()
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert s.verdict.code == "capture-incomplete"
    assert "sent a message" in s.verdict.summary and "no reply to it" in s.verdict.summary


@pytest.mark.parametrize("reply", [b"403 4.7.0 TLS handshake failed.\r\n",
                                   b"450 TLS negotiation failure\r\n"])
def test_a_plaintext_failure_reply_to_a_client_hello_is_a_failed_handshake(
        tmp_path: Path, reply: bytes) -> None:
    """Sendmail (403) and GroupWise (450) give up a TLS handshake by saying so in SMTP,
    in plaintext (DESIGN's real cases; neither is in the lab, so crafted).  That is the
    handshake failing at the server -- not 'the server does not speak TLS here'."""
    from tests.tls_fixtures import client_hello_record, sni_ext

    conv = _up_to_starttls_220()
    conv.client_sends(client_hello_record([0x0005, 0x000A], [sni_ext("mx.example")]))
    conv.server_sends(reply)
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert s.verdict.code == "tls-closed-during-handshake"
    text = reply.decode().strip()
    assert f"plaintext SMTP reply, `{text}`" in s.verdict.summary
    assert "does not speak TLS" not in s.verdict.summary
    assert "all of them legacy" in s.verdict.summary  # what the server judged


def test_a_plaintext_greeting_on_465_is_still_a_tls_mode_mismatch(tmp_path: Path) -> None:
    from tests.tls_fixtures import client_hello_record, sni_ext

    conv = Conversation(sport=465)
    conv.handshake()
    conv.client_sends(client_hello_record([0x1301], [sni_ext("mx.example")]))
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert "does not speak TLS" in s.verdict.summary


def test_plaintext_both_ways_on_465_is_read_as_smtp(tmp_path: Path) -> None:
    """Port 465 in a decrypted export (or plaintext SMTP on that port): the server greets
    and the client answers in the clear.  Read as SMTP -- not 'the server does not speak
    TLS here', which is for a server answering a real ClientHello with plaintext."""
    conv = Conversation(sport=465)
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    conv.server_sends(b"250 mx\r\n")
    up_to_354(conv)
    conv.client_sends(b"hi\r\n.\r\nQUIT\r\n")
    conv.server_sends(b"250 queued\r\n221 bye\r\n")
    conv.close()
    s = only_session(conv.write(tmp_path / "x.pcap"))
    assert s.verdict.code == "ok"
    (note,) = [n for n in s.notes if n.code == "decrypted-capture"]
    assert "On port 465" in note.summary
    assert [r.fields["answers"] for r in kinds(s, "smtp-reply")][:2] == ["CONNECT", "EHLO"]
    assert not kinds(s, "tls-not-tls")
