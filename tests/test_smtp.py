"""Tests of the SMTP dissector, feeding bytes directly (no capture involved)."""

from __future__ import annotations

import base64
import dataclasses
import time
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.smtp import (
    MAX_LINE,
    MAX_REPLY_LINES,
    Command,
    Credentials,
    MessageBody,
    Reply,
    SmtpParser,
    TlsStart,
    Unparsed,
)

# A session is a list of steps: (direction, bytes), ("gap", direction, length),
# ("close", direction).


def feed(session, parser=None, pieces=None):
    """Feed a session; ``pieces(data)`` may split each chunk into several receive() calls."""
    p = parser or SmtpParser()
    offsets = {"C": 0, "S": 0}
    events = []
    for step in session:
        if step[0] == "gap":
            _, d, n = step
            events += p.gap(d, offsets[d], n)
            offsets[d] += n
        elif step[0] == "close":
            events += p.close(step[1])
        else:
            d, data = step
            for piece in pieces(data) if pieces else [data]:
                events += p.receive(d, piece, offsets[d])
                offsets[d] += len(piece)
    return events


def bytewise(data):
    return [data[i : i + 1] for i in range(len(data))]


def normal(events):
    """Events without TlsStart.pending, the one field that depends on the call boundaries."""
    return [dataclasses.replace(e, pending=b"") if isinstance(e, TlsStart) else e for e in events]


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


GREETING = b"220 mx.example.org ESMTP Postfix\r\n"
EHLO_REPLY = (
    b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
)
BODY = b"Subject: hi\r\n\r\nline one\r\n..stuffed\r\n"

FULL = [
    ("S", GREETING),  # S 0..34
    ("C", b"EHLO client.example\r\n"),  # C 0..21
    ("S", EHLO_REPLY),  # S 34..153
    ("C", b"MAIL FROM:<a@example.net>\r\n"),  # C 21..48
    ("S", b"250 2.1.0 Ok\r\n"),  # S 153..167
    ("C", b"RCPT TO:<b@example.org>\r\n"),  # C 48..73
    ("S", b"250 2.1.5 Ok\r\n"),  # S 167..181
    ("C", b"DATA\r\n"),  # C 73..79
    ("S", b"354 End data with <CR><LF>.<CR><LF>\r\n"),  # S 181..218
    ("C", BODY + b".\r\n"),  # C 79..118 (body 36 bytes, then ".\r\n")
    ("S", b"250 2.0.0 Ok: queued as 4F2\r\n"),  # S 218..247
    ("C", b"QUIT\r\n"),  # C 118..124
    ("S", b"221 2.0.0 Bye\r\n"),  # S 247..262
    ("close", "C"),
    ("close", "S"),
]


def test_full_session_offsets_and_pairing():
    ev = feed(FULL)
    got = [(type(e).__name__, e.direction, e.start, e.end) for e in ev]
    assert got == [
        ("Reply", "S", 0, 34),
        ("Command", "C", 0, 21),
        ("Reply", "S", 34, 153),
        ("Command", "C", 21, 48),
        ("Reply", "S", 153, 167),
        ("Command", "C", 48, 73),
        ("Reply", "S", 167, 181),
        ("Command", "C", 73, 79),
        ("Reply", "S", 181, 218),
        ("MessageBody", "C", 79, 118),
        ("Reply", "S", 218, 247),
        ("Command", "C", 118, 124),
        ("Reply", "S", 247, 262),
    ]
    assert [e.answers for e in of(ev, Reply)] == [
        "CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "BODY", "QUIT",
    ]  # fmt: skip
    assert [e.verb for e in of(ev, Command)] == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    mail = of(ev, Command)[1]
    assert (mail.argument, mail.text, mail.known) == (
        "FROM:<a@example.net>", "MAIL FROM:<a@example.net>", True,
    )  # fmt: skip
    ehlo = of(ev, Reply)[1]
    assert ehlo.capabilities == [
        "PIPELINING", "SIZE", "STARTTLS", "AUTH", "CHUNKING", "8BITMIME",
    ]  # fmt: skip
    assert ehlo.lines[0] == "mx.example.org" and ehlo.lines[2] == "SIZE 10240000"
    assert of(ev, Reply)[2].enhanced == "2.1.0"
    assert of(ev, Reply)[0].enhanced is None
    (body,) = of(ev, MessageBody)
    assert (body.size, body.complete, body.chunk) == (36, True, False)


def test_full_session_bytewise_gives_same_events():
    assert feed(FULL, pieces=bytewise) == feed(FULL)


def test_pipelined_commands_and_replies_in_one_segment():
    ev = feed([
        ("S", GREETING),
        ("C", b"EHLO c\r\n"),
        ("S", b"250-mx\r\n250 PIPELINING\r\n"),
        ("C", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
        ("S", b"250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n"),
        ("C", b"x\r\n.\r\n"),
        ("S", b"250 queued\r\n"),
    ])  # fmt: skip
    pairs = [(e.code, e.answers) for e in of(ev, Reply)]
    assert pairs == [
        (220, "CONNECT"), (250, "EHLO"), (250, "MAIL"), (550, "RCPT"), (250, "RCPT"),
        (354, "DATA"), (250, "BODY"),
    ]  # fmt: skip
    assert of(ev, Reply)[3].enhanced == "5.1.1"
    assert of(ev, MessageBody)[0].size == 3


def test_body_sent_before_354_is_held_then_parsed_as_body():
    ev = feed([
        ("S", GREETING),
        ("C", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSecret: text\r\n.\r\nQUIT\r\n"),
        ("S", b"250 ok\r\n250 ok\r\n"),
        ("S", b"354 go\r\n250 queued\r\n221 bye\r\n"),
    ])  # fmt: skip
    kinds = [type(e).__name__ for e in ev]
    # The body and QUIT come out right after the 354 that gives them their meaning.
    assert kinds == [
        "Reply", "Command", "Command", "Command", "Reply", "Reply", "Reply", "MessageBody",
        "Command", "Reply", "Reply",
    ]  # fmt: skip
    body = of(ev, MessageBody)[0]
    assert (body.start, body.end, body.size, body.complete) == (38, 55, 14, True)
    assert [e.answers for e in of(ev, Reply)][-2:] == ["BODY", "QUIT"]
    assert not any("Secret" in str(e) for e in ev)  # bodies are counted, never shown


def test_5xx_to_data_makes_following_bytes_commands():
    ev = feed([
        ("S", GREETING),
        ("C", b"DATA\r\n"),
        ("C", b"RSET\r\n"),
        ("S", b"554 5.5.1 Error: no valid recipients\r\n250 ok\r\n"),
    ])  # fmt: skip
    assert not of(ev, MessageBody)
    assert [e.verb for e in of(ev, Command)] == ["DATA", "RSET"]
    assert [(e.code, e.answers) for e in of(ev, Reply)][1:] == [(554, "DATA"), (250, "RSET")]


def test_dot_stuffing_and_dot_line_split_across_calls():
    session = [
        ("S", GREETING),
        ("C", b"DATA\r\n"),
        ("S", b"354 go\r\n"),
        ("C", b"a\r\n..\r\n.x\r\n"),  # ".." and ".x" are body lines
        ("C", b"tail\r"),
        ("C", b"\n"),
        ("C", b"."),
        ("C", b"\r"),
        ("C", b"\nNOOP\r\n"),
    ]
    ev = feed(session)
    (body,) = of(ev, MessageBody)
    assert (body.start, body.size, body.end, body.complete) == (6, 17, 26, True)
    assert of(ev, Command)[-1].verb == "NOOP" and of(ev, Command)[-1].start == 26


def test_body_chunk_at_a_line_start_is_scanned_like_any_other():
    """A chunk that starts a body line (the one before ended in LF) and does not start
    with "." takes receive()'s fast path: a "." line inside it ends the body, and a chunk
    ending mid-line leaves the next chunk's "." mid-line too."""
    head = [("S", GREETING), ("C", b"DATA\r\n"), ("S", b"354 go\r\n")]
    ev = feed([*head, ("C", b"a\r\n"), ("C", b"bc"), ("C", b".\r\n"), ("C", b"d\r\n.\r\n")])
    (body,) = of(ev, MessageBody)
    assert (body.size, body.end, body.complete) == (11, 20, True)  # not ended by "bc."
    ev = feed([*head, ("C", b"a\r\n"), ("C", b"b\r\n.\r\nNOOP\r\n")])
    (body,) = of(ev, MessageBody)
    assert (body.size, body.end, body.complete) == (6, 15, True)
    assert of(ev, Command)[-1].verb == "NOOP"


MAX_LINE_TEXT = MAX_LINE - 6  # the longest reply-line text _lines takes whole


@pytest.mark.parametrize("reply", [
    EHLO_REPLY,
    b"250-a\r\n251-b\r\n250 c\r\n",  # codes differ: malformed
    b"250-a\r\n451 b\r\n",  # the last line's code is the reply's
    b"250-a\r\n250\r\n",  # a final line without text
    b"250-a\r\n250 b\r\n250 c\r\n",  # two replies
    b"250-a\r\n250-b\n250 c\r\n",  # a bare LF
    b"250-a\r\n250-\xc3\xa9\r\n250 c\r\n",  # not ASCII
    b"250-a\r\n250-" + b"x" * MAX_LINE_TEXT + b"\r\n250 c\r\n",
    b"250-a\r\n250-" + b"x" * (MAX_LINE_TEXT + 1) + b"\r\n250 c\r\n",
    b"250-a\r\n250-" + b"x" * MAX_LINE + b"\r\n250 c\r\n",  # cut
    b"250-a\r\n250 " + b"x" * MAX_LINE + b"\r\n",
    b"250-a\r\n" * MAX_REPLY_LINES + b"250 c\r\n",  # more lines than kept
    b"250-a\r\n" * (MAX_REPLY_LINES - 1) + b"250 c\r\n",
    b"220-a\r\n220 go ahead\r\n\x16\x03\x01",  # a multi-line 220 to STARTTLS
])  # fmt: skip
def test_multi_line_reply_in_one_piece_as_line_by_line(reply: bytes) -> None:
    """A whole multi-line reply in one receive() takes a shortcut (_reply_block); its
    events are those of the same bytes fed one by one, which never take it."""
    session = [("S", GREETING), ("C", b"EHLO c\r\nSTARTTLS\r\n"), ("S", reply)]
    whole = feed(session)
    assert normal(whole) == normal(feed(session, pieces=bytewise))
    assert of(whole, Reply)[1].end > of(whole, Reply)[1].start


def test_empty_body():
    ev = feed([("S", GREETING), ("C", b"DATA\r\n"), ("S", b"354 go\r\n"), ("C", b".\r\n")])
    assert [(b.start, b.end, b.size) for b in of(ev, MessageBody)] == [(6, 9, 0)]


def test_bare_lf_lines_and_body():
    ev = feed([
        ("S", b"220 mx\n"),
        ("C", b"HELO c\nDATA\n"),
        ("S", b"250 ok\n354 go\n"),
        ("C", b"body\n.\nQUIT\r\n"),
    ])  # fmt: skip
    helo, data, quit_ = of(ev, Command)
    assert helo.bare_lf and data.bare_lf and not quit_.bare_lf
    assert (helo.end, data.start, data.end) == (7, 7, 12)
    (body,) = of(ev, MessageBody)
    assert (body.size, body.end) == (5, 19)
    assert body.bare_lf_end  # "\n.\n" ends it, as Postfix without smtpd_forbid_bare_newline
    assert of(ev, Reply)[0].code == 220


# The end-of-data line and whether it is the RFC 5321 one (<CR><LF>.<CR><LF>).
TERMINATORS = [(b"\r\n.\r\n", False), (b"\n.\n", True), (b"\r\n.\n", True),
               (b"\n.\r\n", True)]


@pytest.mark.parametrize(("end", "bare"), TERMINATORS)
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_end_of_data_with_a_bare_lf_is_marked(end: bytes, bare: bool, split: str) -> None:
    """SMTP smuggling hides a message behind a "." line with a bare LF; the parser marks
    such an end (wherever the segments split it) and only such an end."""
    body = b"Subject: x\r\n\r\na.b\r\n..stuffed\r\nlast"
    ev = feed([("S", GREETING), ("C", b"DATA\r\n"), ("S", b"354 go\r\n"),
               ("C", body + end + b"QUIT\r\n")],
              pieces=bytewise if split == "bytewise" else None)
    (msg,) = of(ev, MessageBody)
    assert msg.complete and msg.bare_lf_end is bare
    assert msg.size == len(body) + end.index(b".")  # the line break before "." is body
    assert of(ev, Command)[-1].verb == "QUIT"


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text("ab. \r", max_size=6).map(str.encode), max_size=6),
       end=st.sampled_from(TERMINATORS), cuts=st.lists(st.integers(1, 60), max_size=8))
def test_bare_lf_end_does_not_depend_on_the_segments(lines, end, cuts) -> None:
    """Any body whose lines are CRLF-terminated and do not start with ".", any split."""
    body = b"".join(b"x" + line.replace(b"\r", b"") + b"\r\n" for line in lines) + b"z"
    data = body + end[0]
    pieces, pos = [], 0
    for cut in sorted(set(cuts)):
        if pos < cut < len(data):
            pieces.append(data[pos:cut])
            pos = cut
    pieces.append(data[pos:])
    ev = feed([("S", GREETING), ("C", b"DATA\r\n"), ("S", b"354 go\r\n")]
              + [("C", piece) for piece in pieces])
    (msg,) = of(ev, MessageBody)
    assert msg.bare_lf_end is end[1]


def test_bdat_chunks_and_last():
    ev = feed([
        ("S", GREETING),
        ("C", b"BDAT 5\r\nhel"),  # chunk split across calls, next command right after
        ("C", b"loBDAT 3 LAST\r\nabcQUIT\r\n"),
        ("S", b"250 5 octets\r\n250 done\r\n221 bye\r\n"),
    ])  # fmt: skip
    assert [(e.chunk, e.last, e.size, e.start, e.end) for e in of(ev, MessageBody)] == [
        (True, False, 5, 8, 13),
        (True, True, 3, 26, 29),
    ]
    assert [e.verb for e in of(ev, Command)] == ["BDAT", "BDAT", "QUIT"]
    assert [e.answers for e in of(ev, Reply)] == ["CONNECT", "BDAT", "BDAT", "QUIT"]


def test_bdat_zero_last_and_malformed_bdat():
    ev = feed([("C", b"BDAT 0 LAST\r\nBDAT 5 X\r\nBDAT five\r\nNOOP\r\n")])
    (body,) = of(ev, MessageBody)
    assert (body.size, body.last, body.start, body.end) == (0, True, 13, 13)
    # Malformed BDAT consumes no chunk: the next lines are still commands.
    assert [e.text for e in of(ev, Command)] == ["BDAT 0 LAST", "BDAT 5 X", "BDAT five", "NOOP"]


USER, PASSWORD = b"alice@example.net", b"Tr0ub4dor&3"
PLAIN = base64.b64encode(b"\0" + USER + b"\0" + PASSWORD)


def secret_forms():
    forms = [USER, PASSWORD, PLAIN, base64.b64encode(USER), base64.b64encode(PASSWORD)]
    return [f.decode() for f in forms] + [PLAIN.decode()[:12]]


def assert_no_secret(events):
    for e in events:
        for f in dataclasses.fields(e):
            value = getattr(e, f.name)
            texts = value if isinstance(value, list) else [value]
            for text in texts:
                if isinstance(text, bytes):
                    text = text.decode("latin-1")
                for secret in secret_forms():
                    assert secret not in str(text), (e, f.name)


def test_auth_plain_initial_response_is_masked():
    ev = feed([
        ("S", GREETING),
        ("C", b"AUTH PLAIN " + PLAIN + b"\r\n"),
        ("S", b"235 2.7.0 Authentication successful\r\n"),
        ("C", b"MAIL FROM:<a@x>\r\n"),
    ])  # fmt: skip
    auth, mail = of(ev, Command)
    assert (auth.verb, auth.argument, auth.text) == ("AUTH", "PLAIN ****", "AUTH PLAIN ****")
    assert mail.verb == "MAIL"  # after 235 the client speaks commands again
    assert of(ev, Reply)[1].answers == "AUTH"
    assert_no_secret(ev)


def test_auth_login_with_334_challenges():
    ev = feed([
        ("S", GREETING),
        ("C", b"AUTH LOGIN\r\n"),
        ("S", b"334 VXNlcm5hbWU6\r\n"),
        ("C", base64.b64encode(USER) + b"\r\n"),
        ("S", b"334 UGFzc3dvcmQ6\r\n"),
        ("C", base64.b64encode(PASSWORD) + b"\r\n"),
        ("S", b"535 5.7.8 authentication failed\r\n"),
        ("C", b"QUIT\r\n"),
    ])  # fmt: skip
    kinds = [type(e).__name__ for e in ev]
    assert kinds == [
        "Reply", "Command", "Reply", "Credentials", "Reply", "Credentials", "Reply", "Command",
    ]  # fmt: skip
    creds = of(ev, Credentials)
    assert [(c.start, c.end, c.length) for c in creds] == [(12, 38, 24), (38, 56, 16)]
    assert [r.answers for r in of(ev, Reply)] == ["CONNECT", "AUTH", "AUTH", "AUTH"]
    assert of(ev, Reply)[1].lines == ["VXNlcm5hbWU6"]  # challenges are harmless: shown
    assert of(ev, Command)[-1].verb == "QUIT"
    assert_no_secret(ev)


def test_auth_login_initial_response_and_cancel():
    ev = feed([
        ("C", b"AUTH LOGIN " + base64.b64encode(USER) + b"\r\n"),
        ("S", b"334 UGFzc3dvcmQ6\r\n"),
        ("C", b"*\r\n"),
        ("S", b"501 5.7.0 cancelled\r\n"),
        ("C", b"auth cram-md5\r\n"),
        ("S", b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n"),
        ("C", base64.b64encode(USER + b" " + PASSWORD) + b"\r\n"),
        ("S", b"235 ok\r\n"),
    ])  # fmt: skip
    cmds = of(ev, Command)
    assert [c.text for c in cmds] == ["AUTH LOGIN ****", "*", "auth cram-md5"]
    assert len(of(ev, Credentials)) == 1
    assert_no_secret(ev)


def test_secret_cut_by_gap_or_close_stays_masked():
    ev = feed([
        ("C", b"AUTH LOGIN\r\n"),
        ("S", b"334 VXNlcm5hbWU6\r\n"),
        ("C", base64.b64encode(USER)[:10]),
        ("gap", "C", 3),
        ("C", base64.b64encode(USER)[13:] + b"\r\n" + base64.b64encode(PASSWORD)[:8]),
        ("close", "C"),
    ])  # fmt: skip
    assert [type(e).__name__ for e in ev][-3:] == ["Credentials"] * 3
    assert_no_secret(ev)


def starttls_session(after_220_s=b"", client_tls=b"\x16\x03\x01\x00\x05hello"):
    return [
        ("S", GREETING),  # 0..34
        ("C", b"EHLO c\r\n"),  # 0..8
        ("S", b"250-mx\r\n250 STARTTLS\r\n"),  # 34..56
        ("C", b"STARTTLS\r\n"),  # 8..18
        ("S", b"220 2.0.0 Ready to start TLS\r\n" + after_220_s),  # 56..86
        ("C", client_tls),
        ("S", b"\x16\x03\x03\x00\x02hi"),
        ("C", b"more TLS"),
    ]


def test_starttls_220_starts_tls_in_both_directions():
    ev = feed(starttls_session(after_220_s=b"\x16\x03\x03"))
    tls = of(ev, TlsStart)
    assert [(t.direction, t.start, t.end, t.pending) for t in tls] == [
        ("S", 86, 86, b"\x16\x03\x03"),
        ("C", 18, 18, b"\x16\x03\x01\x00\x05hello"),
    ]
    assert ev[-2:] == tls  # and nothing after: later bytes are the TLS parser's
    assert of(ev, Reply)[-1].answers == "STARTTLS"


def test_starttls_client_bytes_before_220_are_pending():
    p = SmtpParser()
    assert p.receive("S", GREETING, 0)
    p.receive("C", b"STARTTLS\r\n", 0)
    assert p.receive("C", b"\x16\x03\x01\x00", 10) == []  # held until the reply is known
    ev = p.receive("S", b"220 go\r\n", 34)
    assert [(t.direction, t.start, t.pending) for t in of(ev, TlsStart)] == [
        ("S", 42, b""),
        ("C", 10, b"\x16\x03\x01\x00"),
    ]
    assert p.receive("C", b"\x01rest", 14) == []
    assert p.receive("S", b"250 plain?\r\n", 42) == []
    assert p.close("C") == [] and p.gap("S", 54, 10) == []


def test_an_envelope_command_ends_an_auth_exchange_whose_answer_was_missed():
    """The 235 never reached the capture (or the client pipelined MAIL behind an
    initial response): 'MAIL FROM:' cannot be a SASL response (space, colon), so the
    lines from there on are commands again -- before, a whole message was shown as
    masked AUTH data.  The credential lines before it stay masked."""
    ev = feed([
        ("S", GREETING),
        ("C", b"AUTH LOGIN\r\n"),
        ("S", b"334 VXNlcm5hbWU6\r\n"),
        ("C", b"dXNlcg==\r\ncGFzcw==\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d>\r\n"),
    ])  # fmt: skip
    assert [c.verb for c in of(ev, Command)] == ["AUTH", "MAIL", "RCPT"]
    assert [c.length for c in of(ev, Credentials)] == [8, 8]
    ev = feed([("S", GREETING), ("C", b"AUTH PLAIN dGVzdA==\r\nmail from:<a@b>\r\n")])
    assert [(c.verb, c.argument) for c in of(ev, Command)] == [
        ("AUTH", "PLAIN ****"), ("MAIL", "from:<a@b>")]


def test_client_tls_after_an_unreported_hole_is_handed_over_with_its_offset():
    """After the 220 the client's first TLS segment never arrived and the caller did
    not call gap(): the next bytes still go to TLS, with the offset they sit at, so the
    TLS parser sees the hole instead of reading them as a first record."""
    p = SmtpParser()
    p.receive("S", GREETING, 0)
    p.receive("C", b"STARTTLS\r\n", 0)
    assert [t.direction for t in of(p.receive("S", b"220 go\r\n", 34), TlsStart)] == ["S"]
    ev = p.receive("C", b"second half of a ClientHello", 10 + 100)
    assert [(t.start, t.pending, t.pending_at) for t in of(ev, TlsStart)] == [
        (10, b"second half of a ClientHello", 110)]
    assert p.receive("C", b"more", 110 + 28) == []  # TLS's now, not SMTP's


@pytest.mark.parametrize("pieces", [None, bytewise])
def test_plaintext_pipelined_behind_starttls_is_shown_and_tls_starts_after_it(pieces):
    """The CVE-2011-0411 probe: "STARTTLS\r\nRSET\r\n" in one write, then (even before
    the 220) a ClientHello.  The RSET is shown as plaintext after STARTTLS, and TLS starts
    at the record, not at the R -- else the ClientHello would hide behind "not TLS"."""
    hello = b"\x16\x03\x01\x00\x05hello"
    ev = feed([("S", GREETING), ("C", b"STARTTLS\r\nRSET\r\nNOOP\r\n" + hello),
               ("S", b"220 go\r\n")], pieces=pieces)
    injected = [(u.start, u.end, u.preview) for u in of(ev, Unparsed)
                if u.reason == "plaintext-after-starttls"]
    assert injected == [(10, 16, "RSET"), (16, 22, "NOOP")]
    (c_start,) = [t for t in of(ev, TlsStart) if t.direction == "C"]
    assert c_start.start == 22 and c_start.pending == hello
    assert not of(ev, Command)[1:]  # STARTTLS only: the injected lines are no commands


def test_binary_bytes_behind_starttls_stay_tls() -> None:
    """An SSLv2-style ClientHello (0x80 ...) sent before the 220 is no plaintext line."""
    v2 = b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10\n\x00\x05"
    ev = feed([("S", GREETING), ("C", b"STARTTLS\r\n" + v2), ("S", b"220 go\r\n")])
    assert not [u for u in of(ev, Unparsed) if u.reason == "plaintext-after-starttls"]
    (c_start,) = [t for t in of(ev, TlsStart) if t.direction == "C"]
    assert c_start.start == 10 and c_start.pending == v2


def test_starttls_454_continues_in_plaintext():
    ev = feed([
        ("S", GREETING),
        ("C", b"STARTTLS\r\nEHLO again\r\n"),  # pipelined after STARTTLS: held, then commands
        ("S", b"454 4.7.0 TLS not available due to local problem\r\n250 mx\r\n"),
    ])  # fmt: skip
    assert not of(ev, TlsStart)
    assert [e.verb for e in of(ev, Command)] == ["STARTTLS", "EHLO"]
    assert [(r.code, r.answers) for r in of(ev, Reply)][1:] == [
        (454, "STARTTLS"), (250, "EHLO"),
    ]  # fmt: skip


def test_pix_masked_command_and_keyword():
    ev = feed([
        ("S", b"220 ****************************************\r\n"),
        ("C", b"EHLO c\r\n"),
        ("S", b"250-mx\r\n250-XXXXXXXA\r\n250 PIPELINING\r\n"),
        ("C", b"MAIL FROM:<a@x>\r\nXXXX TO:<x@y>\r\n"),
    ])  # fmt: skip
    assert of(ev, Reply)[1].capabilities == ["XXXXXXXA", "PIPELINING"]
    xx = of(ev, Command)[-1]
    assert (xx.verb, xx.known, xx.text, xx.start) == ("XXXX", False, "XXXX TO:<x@y>", 25)
    assert of(ev, Reply)[0].lines == ["*" * 40]


def test_malformed_reply_line_without_code():
    ev = feed([
        ("C", b"DATA\r\n"),
        ("S", b"354 go\r\n"),
        ("C", b".\r\n"),
        ("S", b"4.7.0 [IPTS04] Message from 1.2.3.4 temporarily deferred\r\n"),
    ])  # fmt: skip
    r = of(ev, Reply)[-1]
    assert (r.code, r.malformed, r.enhanced, r.answers) == (None, True, "4.7.0", "BODY")
    assert r.text.startswith("4.7.0 [IPTS04]")


def test_greeting_554_and_long_multiline_greeting():
    ev = feed([("S", b"554 5.7.1 go away\r\n")])
    assert [(r.code, r.answers) for r in of(ev, Reply)] == [(554, "CONNECT")]
    lines = b"".join(b"220-line %04d %s\r\n" % (i, b"x" * 80) for i in range(80))
    big = lines + b"220 ready\r\n"
    assert len(big) > 5000
    ev = feed([("S", big)], pieces=lambda d: [d[i : i + 1448] for i in range(0, len(d), 1448)])
    (r,) = ev
    assert (r.code, len(r.lines), r.end, r.answers) == (220, 81, len(big), "CONNECT")
    assert r.text.endswith("[81 lines]")


def test_over_long_line_is_truncated_not_buffered():
    line = b"NOOP " + b"a" * 10000 + b"\r\n"
    ev = feed([("C", line + b"QUIT\r\n")], pieces=lambda d: [d[:3000], d[3000:]])
    noop, quit_ = of(ev, Command)
    assert (noop.truncated, len(noop.text), noop.end) == (10005 - MAX_LINE, MAX_LINE, 10007)
    assert (quit_.start, quit_.verb) == (10007, "QUIT")


def test_eight_bit_and_empty_line():
    ev = feed([("C", b"MAIL FROM:<j\xc3\xb6rg@x> \xff\r\n\r\n")])
    mail, empty = of(ev, Command)
    assert mail.eight_bit and mail.text == "MAIL FROM:<j\u00f6rg@x> \\xff"
    assert (empty.verb, empty.text, empty.known, empty.start, empty.end) == ("", "", False, 23, 25)


def test_gap_resync_in_command_mode():
    ev = feed([
        ("C", b"MAIL FROM:<a@x>\r\nRCPT TO"),
        ("gap", "C", 10),
        ("C", b"x>\r\nRCPT TO:<c@y>\r\n"),
        ("S", b"250 ok\r\n"),
        ("gap", "S", 4),
        ("S", b"ok\r\n250 ok\r\n"),
    ])  # fmt: skip
    assert [(type(e).__name__, e.start, e.end) for e in ev] == [
        ("Command", 0, 17),
        ("Command", 17, 24),  # the partial line before the gap: a command, cut
        ("Unparsed", 34, 38),  # the tail after it, until the next line start
        ("Command", 38, 53),
        ("Reply", 0, 8),
        ("Unparsed", 12, 16),
        ("Reply", 16, 24),
    ]
    assert all(e.reason == "gap-resync" for e in of(ev, Unparsed))
    cut = of(ev, Command)[1]
    assert (cut.verb, cut.argument, cut.partial) == ("RCPT", "TO", True)


def test_a_command_cut_by_a_gap_still_waits_for_its_reply():
    """The server got the whole line and answers it; the capture lost its end."""
    ev = feed([("S", GREETING), ("C", b"MAIL FROM:<a@x>\r\nRCPT TO:<som"), ("gap", "C", 9),
               ("C", b"RCPT TO:<c@y>\r\n"), ("S", b"250 ok\r\n550 no\r\n250 ok\r\n")])
    assert [(r.code, r.answers) for r in of(ev, Reply)][1:] == [
        (250, "MAIL"), (550, "RCPT"), (250, "RCPT")]
    assert [c.partial for c in of(ev, Command)] == [False, True, False]


def test_a_reply_line_cut_by_a_gap_still_ends_or_continues_its_reply():
    """A snaplen of 96 leaves 30 bytes of each segment: the line's code and separator
    say whether the reply ended there.  Before, the greeting became 'not SMTP' (so the
    client looked like an early talker) and the EHLO reply swallowed the 220 to
    STARTTLS (so TLS never started)."""
    ev = feed([
        ("S", b"220 mx.lab.example ESMTP Postf"), ("gap", "S", 10),
        ("C", b"EHLO client.lab.example\r\n"),
        ("S", b"250-mx.lab.example\r\n250-PIPELI"), ("gap", "S", 135),
        ("C", b"STARTTLS\r\n"),
        ("S", b"220 2.0.0 Ready to start TLS\r\n"),
    ])  # fmt: skip
    replies = of(ev, Reply)
    assert [(r.code, r.answers, r.gap) for r in replies] == [
        (220, "CONNECT", True), (250, "EHLO", True), (220, "STARTTLS", False)]
    assert replies[0].lines == ["mx.lab.example ESMTP Postf..."]
    assert replies[1].lines == ["mx.lab.example"]  # the cut "250-PIPELI" is counted, not shown
    assert replies[1].truncated == len(b"250-PIPELI")
    assert [t.direction for t in of(ev, TlsStart)] == ["S"]  # the client's follows its bytes
    assert not of(ev, Unparsed)


def test_gap_at_line_start_keeps_next_command():
    ev = feed([("C", b"NOOP\r\n"), ("gap", "C", 6), ("C", b"QUIT\r\n")])
    assert [(e.verb, e.start) for e in of(ev, Command)] == [("NOOP", 0), ("QUIT", 12)]


def test_gap_in_body_counts_bytes_and_end_still_found():
    ev = feed([
        ("C", b"DATA\r\n"),
        ("S", b"354 go\r\n"),
        ("C", b"abc"),
        ("gap", "C", 100),
        ("C", b"def\r\n.\r\nQUIT\r\n"),
    ])  # fmt: skip
    (body,) = of(ev, MessageBody)
    assert (body.size, body.gap_bytes, body.complete, body.end) == (108, 100, True, 117)
    assert of(ev, Command)[-1].verb == "QUIT"


def test_gap_swallowing_dot_line_ends_body_at_server_reply():
    ev = feed([
        ("C", b"DATA\r\n"),
        ("S", b"354 go\r\n"),
        ("C", b"abc\r\n"),
        ("gap", "C", 3),
        ("S", b"250 queued\r\n"),
        ("C", b"QUIT\r\n"),
    ])  # fmt: skip
    (body,) = of(ev, MessageBody)
    assert (body.size, body.complete, body.gap_bytes) == (8, False, 3)
    assert of(ev, Reply)[-1].answers == "BODY"
    assert of(ev, Command)[-1].verb == "QUIT"


def test_close_flushes_partial_line_and_body():
    ev = feed([
        ("S", b"250-a\r\n250 b"),
        ("close", "S"),
        ("C", b"DATA\r\n"),
    ])  # fmt: skip
    (r,) = of(ev, Reply)
    assert (r.lines, r.partial, r.end) == (["a", "b"], True, 12)
    ev = feed([("C", b"DATA\r\n"), ("S", b"354 go\r\n"), ("C", b"12345"), ("close", "C")])
    (body,) = of(ev, MessageBody)
    assert (body.size, body.complete, body.end) == (5, False, 11)
    ev = feed([("C", b"QUI"), ("close", "C")])
    (cmd,) = ev
    assert (cmd.verb, cmd.partial, cmd.end) == ("QUI", True, 3)


def test_client_close_while_held_is_decided_by_the_reply():
    ev = feed([
        ("C", b"DATA\r\nbody\r\n"),
        ("close", "C"),
        ("S", b"354 go\r\n"),
    ])  # fmt: skip
    (body,) = of(ev, MessageBody)
    assert (body.size, body.complete, body.end) == (6, False, 12)


def test_client_hello_on_plaintext_port():
    hello = b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04\x03\x03\n\x00"
    ev = feed([("C", hello + b"EHLO c\r\n")], pieces=bytewise)
    rec, ehlo = ev
    assert (rec.reason, rec.start, rec.end) == ("tls-record", 0, 13)
    assert rec.preview == "\\x16\\x03\\x01\\x00\\x08"
    assert (ehlo.verb, ehlo.start) == ("EHLO", 13)


def test_binary_garbage():
    ev = feed([("C", b"\x00\x01\x02\xff\xfe\r\nNOOP\r\n"), ("S", b"\x01\x02\x03junk\r\n")])
    assert [(type(e).__name__, getattr(e, "reason", None)) for e in ev] == [
        ("Unparsed", "binary"), ("Command", None), ("Unparsed", "binary"),
    ]  # fmt: skip
    assert ev[0].preview == "\\x00\\x01\\x02\\xff\\xfe"


def test_offsets_jump_and_overlap_are_tolerated():
    p = SmtpParser()
    assert [e.verb for e in p.receive("C", b"NOOP\r\n", 0)] == ["NOOP"]
    assert p.receive("C", b"NOOP\r\n", 0) == []  # retransmitted: already seen
    ev = p.receive("C", b"P\r\nQUIT\r\n", 3)  # its first 3 bytes were already fed
    assert [(e.verb, e.start) for e in ev] == [("QUIT", 6)]
    ev = p.receive("C", b"RSET\r\n", 20)  # 8 bytes never reported missing: a gap
    assert [(e.verb, e.start) for e in of(ev, Command)] == [("RSET", 20)]


# -- property tests -------------------------------------------------------------------------

VALID = [
    ("S", GREETING),
    ("C", b"EHLO c\r\n"),
    ("S", EHLO_REPLY),
    ("C", b"AUTH PLAIN " + PLAIN + b"\r\n"),
    ("S", b"235 ok\r\n"),
    ("C", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + BODY + b".\r\n"),
    ("S", b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n"),
    ("C", b"BDAT 4\r\nab\r\nBDAT 0 LAST\r\nAUTH LOGIN\r\n"),
    ("S", b"250 ok\r\n250 ok\r\n334 VXNlcm5hbWU6\r\n"),
    ("C", base64.b64encode(USER) + b"\r\n"),
    ("S", b"235 ok\r\n"),
    ("C", b"STARTTLS\r\n"),
    ("S", b"220 go\r\n\x16\x03\x03"),
    ("C", b"\x16\x03\x01\x00\x05hello"),
    ("close", "C"),
    ("close", "S"),
]


def splitter(cuts):
    def pieces(data):
        points = sorted({c % (len(data) + 1) for c in cuts})
        bounds = [0, *points, len(data)]
        return [data[a:b] for a, b in pairwise(bounds) if b > a]

    return pieces


def check_well_formed(events):
    last_end = {"C": 0, "S": 0}
    for e in events:
        assert e.direction in ("C", "S")
        assert 0 <= e.start <= e.end
        if not isinstance(e, TlsStart):
            assert e.start >= last_end[e.direction], e  # in stream order, no overlap
            last_end[e.direction] = e.end
        if isinstance(e, Unparsed):
            assert len(e.preview) <= 80


def test_valid_session_expected_shape():
    ev = feed(VALID)
    check_well_formed(ev)
    assert_no_secret(ev)
    assert [type(e).__name__ for e in ev][-2:] == ["TlsStart", "TlsStart"]
    assert [r.answers for r in of(ev, Reply)] == [
        "CONNECT", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "BODY", "BDAT", "BDAT", "AUTH",
        "AUTH", "STARTTLS",
    ]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_identical_events(cuts):
    whole = feed(VALID)
    split = feed(VALID, pieces=splitter(cuts))
    assert normal(split) == normal(whole)


TOKENS = [
    b"DATA\r\n", b"354 go\r\n", b"STARTTLS\r\n", b"220 ok\r\n", b"AUTH LOGIN\r\n", b"334 x\r\n",
    b".\r\n", b"\r\n", b"\n", b"BDAT 3\r\n", b"BDAT 2 LAST\r\n", b"250-a\r\n", b"250 b\r\n",
    b"\x16\x03\x01\x00\x02", b"..", b"\r", b"4.7.0 x\r\n", b"\x00", b"\xff", b"*\r\n",
]  # fmt: skip
step = st.one_of(
    st.tuples(st.sampled_from("CS"), st.binary(max_size=60)),
    st.tuples(
        st.sampled_from("CS"),
        st.lists(
            st.sampled_from(TOKENS),
            max_size=8,
        ).map(b"".join),
    ),  # fmt: skip
    st.tuples(st.just("gap"), st.sampled_from("CS"), st.integers(0, 50)),
    st.tuples(st.just("close"), st.sampled_from("CS")),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(step, max_size=25), st.lists(st.integers(0, 100), max_size=6))
def test_arbitrary_bytes_never_raise_and_split_invariant(session, cuts):
    whole = feed(session)
    check_well_formed(whole)
    assert normal(feed(session, pieces=splitter(cuts))) == normal(whole)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["flip", "drop", "dup", "insert"]),
                  st.integers(0, 255)),
        min_size=1, max_size=10,
    ),
    st.lists(st.integers(0, 400), max_size=8),
)  # fmt: skip
def test_mutated_sessions_never_raise(mutations, cuts):
    session = [s for s in VALID if s[0] != "close"]
    for where, how, byte in mutations:
        i = where % len(session)
        d, data = session[i]
        j = where % (len(data) + 1)
        if how == "flip" and j < len(data):
            data = data[:j] + bytes([byte]) + data[j + 1 :]
        elif how == "drop":
            data = data[:j] + data[j + 1 :]
        elif how == "insert":
            data = data[:j] + bytes([byte]) + data[j:]
        else:
            data = data[:j] + data[j:] + data[j:]
        session[i] = (d, data)
    events = feed([*session, ("close", "C"), ("close", "S")], pieces=splitter(cuts))
    check_well_formed(events)


# -- speed ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_body_scanning_speed():
    """A 100 MB body in 1448-byte segments: the scan must be bytes.find, not a byte loop."""
    line = b"x" * 74 + b"\r\n"
    segment = (line * 20)[:1448]
    count = 100 * 1024 * 1024 // len(segment)
    p = SmtpParser()
    p.receive("C", b"DATA\r\n", 0)
    p.receive("S", b"354 go\r\n", 0)
    offset = 6
    t0 = time.perf_counter()
    for _ in range(count):
        p.receive("C", segment, offset)
        offset += len(segment)
    ev = p.receive("C", b"\r\n.\r\n", offset)
    elapsed = time.perf_counter() - t0
    (body,) = ev
    assert body.size == offset - 6 + 2
    mb_s = offset / elapsed / 1e6
    print(f"\nbody scan: {offset / 1e6:.0f} MB in {elapsed:.2f} s = {mb_s:.0f} MB/s")
    assert mb_s > 50


def test_gap_inside_multiline_reply_keeps_one_reply():
    ev = feed([
        ("S", b"220 mx\r\n"),  # 0..8
        ("C", b"EHLO c\r\n"),
        ("S", b"250-mx\r\n250-PIPE"),  # 8..24
        ("gap", "S", 8),
        ("S", b"NING\r\n250 8BITMIME\r\n"),
    ])  # fmt: skip
    r = of(ev, Reply)[-1]
    assert (r.start, r.end, r.gap, r.answers) == (8, 52, True, "EHLO")
    assert r.truncated == 8 + 6  # "250-PIPE" before the gap, "NING\r\n" after it
    assert r.capabilities == ["8BITMIME"]


def test_221_answers_quit_even_when_a_reply_before_it_is_missing():
    """The 250 to the end of the message never made it into the capture: the 221 that
    follows answers QUIT, not the message (which would then count as accepted)."""
    ev = feed([
        ("S", GREETING),
        ("C", b"MAIL FROM:<a@b>\r\n"), ("S", b"250 ok\r\n"),
        ("C", b"RCPT TO:<c@d>\r\n"), ("S", b"250 ok\r\n"),
        ("C", b"DATA\r\n"), ("S", b"354 go\r\n"),
        ("C", b"hi\r\n.\r\nQUIT\r\n"), ("S", b"221 bye\r\n"),
    ])  # fmt: skip
    assert [(r.code, r.answers) for r in of(ev, Reply)][-1] == (221, "QUIT")


def test_235_answers_auth_even_when_a_reply_before_it_is_missing():
    """The EHLO reply was lost (a gap, say): the 235 still ends the AUTH exchange, so
    the next line is a command again, not masked credentials."""
    ev = feed([
        ("S", GREETING),
        ("C", b"EHLO c\r\nAUTH PLAIN dGVzdA==\r\n"), ("S", b"235 2.7.0 ok\r\n"),
        ("C", b"MAIL FROM:<a@b>\r\n"), ("S", b"250 ok\r\n"),
    ])  # fmt: skip
    assert [(r.code, r.answers) for r in of(ev, Reply)][1:] == [(235, "AUTH"), (250, "MAIL")]
