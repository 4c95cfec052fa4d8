"""Questions many rules ask of a timeline, answered once.

Nothing here decides a verdict; these are the shared vocabulary of the rule
modules (who spoke, when TLS began, which reply answered a message).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pcapsmtp.rules import Evidence
from pcapsmtp.timeline import Event, Session

#: Names a dissector may give the command a final message reply answers.
END_OF_DATA = {"BODY", ".", "END-OF-DATA", "END-OF-MESSAGE", "EOD", "DATA-END", "<CRLF>.<CRLF>"}
#: Replies to these do not end a transaction, whatever their code.
HOUSEKEEPING = {"QUIT", "RSET", "NOOP", "HELP", "VRFY", "EXPN"}
#: A silence at least this long before the waiting side closes is a timeout, not a hang-up.
TIMEOUT_MIN_SECONDS = 5.0


T = TypeVar("T")


def shared(question: Callable[[Any], T]) -> Callable[[Any], T]:
    """Answer ``question`` once for all the rules that ask it (decorator).

    Of a session while :func:`pcapsmtp.rules.run_rules` judges it (the answers are kept
    in the session's ``_memo``, which it clears afterwards): the rules ask the same
    questions again and again (message_pairs 2.3 times a session, the greeting 2, ...),
    and nothing changes the session while they run.  Of a capture's sessions while
    :func:`pcapsmtp.rules.diagnose_capture` runs the capture rules (a SessionList, whose
    ``_memo`` lasts that call): which are NAT copies, how they group.  A list comes back
    as a copy, which its caller may change; other answers are read, never changed.
    Asked of anything without a memo (outside those calls), every call computes.
    """
    @functools.wraps(question)
    def answer(subject: Any) -> T:
        memo = getattr(subject, "_memo", None)
        if memo is None:
            return question(subject)
        try:
            value = memo[question]
        except KeyError:
            value = memo[question] = question(subject)
        return list(value) if type(value) is list else value  # type: ignore[return-value]
    return answer


def who(direction: str) -> str:
    """'client' / 'server' for an event direction."""
    return {"C": "client", "S": "server"}.get(direction, "capture")


def other(direction: str) -> str:
    return "S" if direction == "C" else "C"


def rel(session: Session, t: float | None) -> float:
    """Seconds since the session's first packet: what people compare by eye."""
    return 0.0 if t is None else t - session.first_time


def log_time(t: float | None) -> str:
    """'2026-11-23 20:53:48 UTC': a time the user is told to look up in an MTA's log, as
    logs write it (to the second, wall clock, UTC).  Offsets such as '+0.0 s' stay in
    evidence and timelines, where they are compared by eye; a log has no such offset."""
    import datetime

    if t is None:
        return "the session's time"
    when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def where(session: Session, e: Event) -> str:
    """'frame 15, +0.141 s' -- how a summary points at an event."""
    return f"frame {e.frame}, +{rel(session, e.time):.3f} s"


def ev(e: Event, what: str | None = None) -> Evidence:
    """Evidence for one event (absolute time kept, as the JSON contract wants)."""
    return Evidence(frame=e.frame, time=e.time,
                    what=short(what if what is not None else e.text, EVIDENCE_CAP))


def f(e: Event, *names: str, default: Any = None) -> Any:
    """The first of several possible field names present on ``e``.

    The TLS dissector is young; accepting a couple of spellings keeps a renamed
    field from silently turning a rule off.
    """
    for n in names:
        if n in e.fields and e.fields[n] is not None:
            return e.fields[n]
    return default


def offered_top_version(hello: Event) -> int | None:
    """The highest TLS version a ClientHello offers: the top of its supported_versions
    (GREASE values left out) when it has them, else its legacy_version; None unknown."""
    versions = [v for v in f(hello, "versions", default=[]) or [] if (v & 0x0F0F) != 0x0A0A]
    top = max(versions) if versions else f(hello, "legacy_version")
    return top if isinstance(top, int) else None


def replies(session: Session) -> list[Event]:
    return session.of_kind("smtp-reply")


def commands(session: Session) -> list[Event]:
    return session.of_kind("smtp-command")


def verb(e: Event) -> str:
    return str(e.fields.get("verb") or "").upper()


def answers(e: Event) -> str:
    return str(e.fields.get("answers") or "").upper()


@shared
def _replies_by_answer(session: Session) -> dict[str, list[Event]]:
    by: dict[str, list[Event]] = {}
    for e in replies(session):
        by.setdefault(answers(e), []).append(e)
    return by


def replies_to(session: Session, command: str) -> list[Event]:
    """The replies answering ``command`` (a verb, or CONNECT for the greeting), in order.

    Many rules look for the replies to one command; this sorts every reply by what it
    answers once a session (the greeting, QUIT and STARTTLS questions each read every
    reply before: about 7 us a session of the 100k benchmark).
    """
    return list(_replies_by_answer(session).get(command, ()))


def reply_code(e: Event) -> int | None:
    """The reply's code; when the line lost its digits, the enhanced code's class.

    Seen in the wild: '4.7.0 [IPTS04] ... temporarily deferred' with no 3-digit code.
    """
    code = e.fields.get("code")
    if isinstance(code, int):
        return code
    enh = str(e.fields.get("enhanced") or "")
    if enh[:1] in ("2", "4", "5") and enh[1:2] == ".":
        return int(enh[0]) * 100
    return None


def reply_class(e: Event) -> int | None:
    code = reply_code(e)
    return None if code is None else code // 100


def reply_text(e: Event) -> str:
    lines = e.fields.get("lines") or []
    return " / ".join(str(x) for x in lines) if lines else e.text


def flags(session: Session, kind: str, direction: str | None = None) -> list[Event]:
    """tcp-syn / tcp-syn-ack / tcp-fin / tcp-rst events, optionally of one side."""
    hits = session.of_kind(kind)  # the index, not a pass over the whole timeline
    return hits if direction is None else [e for e in hits if e.direction == direction]


def closes(session: Session) -> list[Event]:
    """FIN and RST events in order: how the connection ended."""
    return session.of_kind("tcp-fin", "tcp-rst")


@shared
def first_close(session: Session) -> Event | None:
    c = closes(session)
    return c[0] if c else None


def is_tls_event(e: Event) -> bool:
    return e.kind.startswith("tls-")


def tls_events(session: Session) -> list[Event]:
    return [e for e in session.events if is_tls_event(e)]


@shared
def tls_start_time(session: Session) -> float | None:
    """When TLS began (first TLS event or STARTTLS switch); None for plaintext only."""
    if session.implicit_tls:
        return session.first_time
    for e in session.events:  # is_tls_event inline: 3.6 -> 1.6 us a session
        kind = e.kind
        if kind == "smtp-tls-start" or kind.startswith("tls-"):
            return e.time
    return None


#: Kinds of events no side of the dialogue sent: a router's ICMP message about the
#: connection.  Their direction names the side it was addressed to, so a rule that reads
#: "an event of direction S" as "the server sent something" must leave them out.
FROM_PATH = frozenset({"icmp-too-big"})
#: Kind prefixes of the events that carry no application bytes (``kind.startswith``).
NOT_DATA = ("tcp-", "icmp-")


def plaintext_after_tls(session: Session) -> Event | None:
    """The mark dissect.py leaves where both sides spoke plaintext SMTP instead of TLS (a
    capture of decrypted traffic), if it did."""
    for e in session.of_kind("note"):
        if e.fields.get("what") == "plaintext-after-tls-start":
            return e
    return None


def data_events(session: Session, direction: str) -> list[Event]:
    """Events that prove ``direction`` sent application bytes (not bare TCP flags, not
    ICMP from the path)."""
    return [e for e in session.events
            if e.direction == direction and not e.kind.startswith(NOT_DATA) and e.kind != "note"]


def gaps(session: Session, direction: str | None = None) -> list[Event]:
    return [e for e in session.of_kind("tcp-gap")
            if direction is None or e.direction == direction]


def message_replies(session: Session) -> list[Event]:
    """The final reply to each message (after DATA's '.', or a BDAT ... LAST chunk)."""
    return [reply for _, reply in message_pairs(session)]


@shared
def message_pairs(session: Session) -> list[tuple[Event | None, Event]]:
    """(the body or last chunk, or None when it was not seen; its final reply), in order.

    Pairs bodies with replies in order, because pipelining lets the next MAIL
    travel before the reply to the previous message arrives.
    """
    pending: list[Event] = []  # bodies/chunks awaiting their reply, oldest first
    out: list[tuple[Event | None, Event]] = []
    for e in session.events:
        if e.kind == "smtp-body":
            if e.fields.get("chunk") or e.fields.get("complete", True):
                pending.append(e)
        elif e.kind == "smtp-reply":
            a = answers(e)
            if a in END_OF_DATA or (a == "DATA" and reply_code(e) != 354 and pending):
                out.append((pending.pop(0) if pending else None, e))
            elif a == "BDAT" and pending:
                chunk = pending.pop(0)
                if chunk.fields.get("last") or reply_class(e) in (4, 5):
                    out.append((chunk, e))
    return out


@shared
def accepted_messages(session: Session) -> list[Event]:
    """2xx replies to a complete message: the server took responsibility for it."""
    return [e for e in message_replies(session) if reply_class(e) == 2]


@shared
def quit_answered(session: Session) -> Event | None:
    """The 221 (or any 2xx) answering QUIT, if the dialogue ended politely."""
    for e in replies_to(session, "QUIT"):
        if reply_class(e) == 2:
            return e
    return None


@shared
def greeting(session: Session) -> Event | None:
    hits = replies_to(session, "CONNECT")
    return hits[0] if hits else None


def last_before(events: Iterable[Event], t: float, frame: int) -> Event | None:
    """The last event strictly before (time, frame)."""
    best = None
    for e in events:
        if (e.time, e.frame) < (t, frame):
            best = e
    return best


def fmt_s(seconds: float) -> str:
    """'60.0 s' / '0.141 s': precision that suits the size."""
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.3f} s"


def session_has_mid_gap(session: Session, direction: str, t0: float, t1: float) -> bool:
    """A capture gap in ``direction`` revealed between t0 and t1 (silence may be missing bytes)."""
    return any(t0 <= g.time <= t1 for g in gaps(session, direction))


def flag_name(close: Event) -> str:
    """'FIN' or 'RST' for a close event."""
    return "FIN" if close.kind == "tcp-fin" else "RST"


def close_phrase(session: Session) -> str:
    """'The client closed (FIN, frame 14, +0.500 s).' or '' when the capture ended first."""
    c = first_close(session)
    if c is None:
        return "The capture ended with the connection still open." if session.open_at_end else ""
    return f"The {who(c.direction)} closed ({flag_name(c)}, {where(session, c)})."


@shared
def orderly_close(session: Session) -> bool:
    """The dialogue ended the way SMTP means it to: QUIT, or the client hanging up first.

    A RST after the 221 is still orderly (many clients reset after QUIT).  A
    close started by the server without QUIT is not: that is a timeout or a
    drop, which other rules name.
    """
    if quit_answered(session):
        return True  # 221 ends the dialogue, even if the capture stops before the FIN
    if session.open_at_end:
        return False
    c = first_close(session)
    if c is None:
        return False
    quit_sent = any(verb(e) == "QUIT" and (e.time, e.frame) < (c.time, c.frame)
                    for e in commands(session))
    if quit_sent and c.kind == "tcp-fin":
        return True
    return c.kind == "tcp-fin" and c.direction == "C"


# Evidence lines quote wire text; a pasted report must not carry a 4 kB command.
EVIDENCE_CAP = 300


def short(text: str, limit: int = 48) -> str:
    """A command or preview cut for a summary line (binary junk must not flood a report)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: How each MTA words the reply it sends when the client stopped talking: (pattern over the
#: reply's text, whose words these are).  From the servers' sources and the lab's captures:
#: Postfix smtpd (``smtpd_timeout``), Exim (``smtp_receive_timeout``), sendmail
#: (``Timeout.command``, its 'Lost input channel' when the read fails), OpenSMTPD, Exchange,
#: Haraka (``inactivity_time``), qmail.  A 4xx whose text says 'timeout' in other words is
#: still a timeout; the table only names the MTA in the report.
TIMEOUT_WORDINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Error: timeout exceeded", re.I), "Postfix"),
    (re.compile(r"SMTP (command|incoming data) timeout", re.I), "Exim"),
    (re.compile(r"Lost input channel", re.I), "sendmail"),
    (re.compile(r"Timeout waiting for client input", re.I), "Exchange"),
    (re.compile(r"^timeout \(#4\.4\.2\)", re.I), "qmail"),
    (re.compile(r"inactivity|idle (too long|timeout)|timed? ?out", re.I), ""),
)


def timeout_wording(e: Event) -> str | None:
    """Whose timeout reply ``e`` is ('Postfix', ..., '' for an unnamed MTA), or None.

    A 4xx only: a 5xx that mentions a timeout refuses something for good, and a 2xx is not
    the server giving up.
    """
    if e.kind != "smtp-reply" or e.direction != "S" or reply_class(e) != 4:
        return None
    text = reply_text(e)
    for pattern, mta in TIMEOUT_WORDINGS:
        if pattern.search(text):
            return mta
    return None


@shared
def server_timed_out(session: Session) -> Event | None:
    """The server's timeout reply that ended the dialogue, if one did.

    The last reply of the session, a timeout in some MTA's words, with no client command
    after it that the server answered: the server gave up on a client that said nothing.
    Whoever sent the first FIN afterwards does not change that (many clients hang up at
    once when they read the 421).
    """
    rs = replies(session)
    if not rs:
        return None
    last = rs[-1]
    return last if timeout_wording(last) is not None else None
