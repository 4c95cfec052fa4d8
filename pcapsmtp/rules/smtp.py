"""Plaintext SMTP outcomes: delivered, refused, deferred, timed out.

These rules read replies and commands the SMTP dissector paired; once TLS
began, the dialogue is encrypted and ``tls.py`` speaks for the session.
"""

from __future__ import annotations

import re

from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    END_OF_DATA,
    HOUSEKEEPING,
    NOT_DATA,
    TIMEOUT_MIN_SECONDS,
    accepted_messages,
    answers,
    close_phrase,
    commands,
    data_events,
    ev,
    first_close,
    flag_name,
    fmt_s,
    gaps,
    log_time,
    message_pairs,
    orderly_close,
    other,
    quit_answered,
    replies,
    reply_class,
    reply_code,
    reply_text,
    server_timed_out,
    session_has_mid_gap,
    short,
    timeout_wording,
    tls_start_time,
    verb,
    where,
    who,
)
from pcapsmtp.timeline import Event, Session


def command_for(session: Session, reply: Event) -> Event | None:
    """The command ``reply`` answered: the last command of that verb before it."""
    want = answers(reply)
    found = None
    for e in commands(session):
        if (e.time, e.frame) > (reply.time, reply.frame):
            break
        if verb(e) == want:
            found = e
    return found


@rule
@needs("smtp-reply")
def delivered(session: Session) -> Finding | None:
    """``ok``: at least one message accepted (2xx to its end), and an orderly close.

    Only for dialogues seen in plaintext: an encrypted session's outcome is
    judged in ``tls.py``, honestly marked as unverifiable.
    """
    accepted = accepted_messages(session)
    if not accepted:
        return None
    n = len(accepted)
    first = accepted[0]
    evidence = [ev(a, f"message accepted: {reply_text(a)}") for a in accepted[:5]]
    gave_up = server_timed_out(session)
    if not orderly_close(session) and (gave_up is None or gave_up.time < accepted[-1].time):
        return Finding(
            code="message-accepted",
            summary=f"{n} message(s) were accepted (first: {where(session, first)}) before "
            "the session ended abnormally.",
            evidence=evidence,
            severity="info",
        )
    q = quit_answered(session)
    if q:
        end = f"the client said QUIT and the server answered {reply_code(q)} ({where(session, q)})"
        evidence.append(ev(q))
    elif gave_up is not None and not orderly_close(session):
        # The client never said QUIT: the server's idle timeout ended the session, which
        # the ``timeout`` rule notes; the message was accepted all the same.
        end = (f"the client then sent nothing more, and the server gave up with "
               f"`{short(gave_up.text, 80)}` ({where(session, gave_up)})")
        evidence.append(ev(gave_up, f"server's timeout reply: {gave_up.text}"))
    else:
        end = close_phrase(session).rstrip(".").replace("The ", "the ", 1)
    return Finding(
        code="ok",
        summary=f"{n} message(s) accepted by the server (first: "
        f"`{reply_code(first)} {reply_text(first)}`, {where(session, first)}); {end}.",
        evidence=evidence,
        cannot_prove="what happened to the message after the server accepted it "
        "(queueing, filtering, delivery onwards)",
        next_step="follow the queue ID from the 250 reply in the server's mail log",
        verdict=True,
        severity="info",
    )


def _unanswered_message(session: Session) -> Event | None:
    """A whole message (body ended by '.', or BDAT LAST) with no reply to it."""
    answered = {id(b) for b, _ in message_pairs(session) if b is not None}
    for e in session.of_kind("smtp-body"):
        whole = e.fields.get("last") if e.fields.get("chunk") else e.fields.get("complete")
        if whole and id(e) not in answered:
            return e
    return None


@rule
def no_mail(session: Session) -> Finding | None:
    """``ok-no-mail``: the session ended in order without a message.

    Probes, sender-verification callouts, EHLO-then-QUIT.  Only claimed when the
    capture saw the whole plaintext dialogue (SYN, no missing bytes): otherwise a
    message might hide in what the capture lacks, and ``capture-incomplete`` is honest.
    """
    if tls_start_time(session) is not None or not session.syn_seen or gaps(session):
        return None
    if accepted_messages(session) or not orderly_close(session):
        return None
    if server_timed_out(session) is not None:
        return None  # the server's timeout ended it, not the client: ``timeout`` speaks
    if not data_events(session, "S"):
        return None  # no banner at all: not a dialogue (tcp rules speak)
    sent = _unanswered_message(session)
    if sent is not None:  # 'without a message' would be wrong
        return Finding(
            code="capture-incomplete",
            summary=f"The client sent a message ({where(session, sent)}) and the capture "
            "holds no reply to it, yet the session ended in order: a client waits for that "
            f"reply, so the capture missed it (or holds something else in its place). "
            f"{close_phrase(session)}",
            evidence=[ev(sent, "message sent, no reply in the capture")],
            cannot_prove="whether the server accepted the message",
            next_step=f"the server's mail log at {log_time(sent.time)} for this client says "
            "whether it was "
            "queued; capture on the server with `tcpdump -s 0`",
            verdict=True,
            severity="warning",
        )
    q = quit_answered(session)
    last_cmd = commands(session)[-1] if commands(session) else None
    did = (f"the last command was {short(last_cmd.text)!r} ({where(session, last_cmd)})"
           if last_cmd else "the client sent no command")
    evidence = [ev(e) for e in (last_cmd, q) if e is not None]
    return Finding(
        code="ok-no-mail",
        summary=f"The session ended in order without a message: {did}. {close_phrase(session)}",
        evidence=evidence,
        cannot_prove="why the client had nothing to send (a probe, an address verification "
        "callout, or a client that changed its mind)",
        next_step="if a message was expected, check the client's log for this connection",
        verdict=True,
        severity="info",
    )


def deciding_failure(session: Session) -> Event | None:
    """The 4xx/5xx reply that ended the dialogue, if one did.

    The last failure reply to a command that matters (not RSET/NOOP/QUIT...)
    after which no such command succeeded: a rejected recipient followed by an
    accepted one did not end anything.
    """
    decisive: Event | None = None
    for e in replies(session):
        a = answers(e)
        if a in HOUSEKEEPING:
            continue
        cls = reply_class(e)
        if cls in (4, 5):
            decisive = e
        elif cls in (2, 3) and decisive is not None and reply_code(decisive) != 421:
            decisive = None
    return decisive


@rule
@needs("smtp-reply")
def failure_reply(session: Session) -> Finding | None:
    """``smtp-deferred`` / ``smtp-rejected``: a 4xx/5xx reply ended the transaction.

    A 421 '... timeout' is the server announcing its own timeout: left to the
    ``timeout`` rule, which says who went silent.  When a message was accepted
    and the session ended in order, the failure is only a note (``ok`` stands).
    """
    bad = deciding_failure(session)
    if bad is None:
        return None
    code = reply_code(bad)
    cls = reply_class(bad)
    text = short(reply_text(bad), 160)
    cmd = command_for(session, bad)
    verdict_code = "smtp-deferred" if cls == 4 else "smtp-rejected"
    what = {"CONNECT": "the connection (greeting)"}.get(answers(bad))
    if what is None:
        what = (f"`{short(cmd.text)}`" if cmd is not None else
                {"BODY": "the message"}.get(answers(bad), answers(bad) or "the dialogue"))
    evidence = []
    if cmd is not None:
        evidence.append(ev(cmd, f"command: {cmd.text}"))
    evidence.append(ev(bad, f"reply: {code if code is not None else '(no code)'} {text}"))
    c = first_close(session)
    if c is not None:
        evidence.append(ev(c, f"{who(c.direction)} {c.kind[4:].upper()}"))
    accepted = accepted_messages(session)
    is_verdict = not (accepted and orderly_close(session))
    if timeout_wording(bad) is not None and bad is server_timed_out(session):
        return None  # the server giving up on a silent client: the ``timeout`` rule speaks
    raw = bad.fields.get("code")
    shown = f"`{raw} {text}`" if raw is not None else f"`{text}` (a reply line without its code)"
    verb_phrase = "deferred (temporary failure)" if cls == 4 else "rejected (permanent failure)"
    summary = (f"The server {verb_phrase} {what} with {shown} ({where(session, bad)}); "
               f"{'no' if not accepted else len(accepted)} message(s) accepted in this session. "
               f"{close_phrase(session)}").strip()
    return Finding(
        code=verdict_code if is_verdict else f"{verdict_code}-note",
        summary=summary,
        evidence=evidence,
        cannot_prove="the server's reason beyond its reply text (policy, reputation, "
        "recipient lookup): only its log says",
        next_step="grep the server's mail log for the client address at "
        f"{log_time(bad.time)}; "
        f"`pcapsmtp explain {verdict_code}` lists the usual log lines",
        verdict=is_verdict,
        severity="error" if cls == 5 else "warning",
    )


def _stage(last: Event) -> str:
    """Postfix's words for where a timeout struck ('after END-OF-MESSAGE', 'after RCPT')."""
    if last.kind == "smtp-reply":
        a = answers(last)
        if a == "CONNECT":
            return "after the greeting"
        if a == "DATA" and reply_code(last) == 354:
            return "after DATA (354), before the message body"
        if a in ("DATA", "BDAT") or a in END_OF_DATA:
            return "after END-OF-MESSAGE"
        return f"after the reply to {a}" if a else "after a server reply"
    if last.kind == "smtp-body":
        return "during the message body" if not last.fields.get("complete") else \
            "after the message body"
    if last.kind == "smtp-command":
        return f"after the client's {verb(last)}"
    return f"after {last.text}"


@rule
@needs("tcp-fin", "tcp-rst")
def silence_timeout(session: Session) -> Finding | None:
    """``timeout``: one side went silent in plaintext SMTP and the other closed after N s.

    The closer is the side that spoke last and then waited: the silence runs
    from its last words to its close (or to its 421, if it announced one).  A
    capture gap in the silent side's direction during the silence voids the
    claim -- the words may be in the missing bytes.
    """
    if tls_start_time(session) is not None:
        return None
    gave_up = server_timed_out(session)
    if gave_up is not None:
        return _server_gave_up(session, gave_up)
    c = first_close(session)
    if c is None:
        return None
    closer = c.direction
    # The last two dialogue events (not TCP, not notes) before the close: one pass, no
    # list of them all (8.0 -> ~5 us a session).
    last = prev = None
    t_close, f_close = c.time, c.frame
    for e in session.events:
        t = e.time
        if (t < t_close or (t == t_close and e.frame < f_close)) \
                and not e.kind.startswith(NOT_DATA) and e.kind != "note":
            last, prev = e, last
    if last is None:
        return None
    closing_act: Event = c
    announced = None
    if (closer == "S" and last.kind == "smtp-reply" and reply_code(last) == 421
            and prev is not None):
        announced = last
        closing_act = announced
        last = prev
    if last.direction != closer:
        return None  # the closer was the one owing an answer: a hang-up, not a timeout
    if quit_answered(session) and (quit_answered(session).time <= last.time):
        return None
    silent = other(closer)
    wait = closing_act.time - last.time
    if wait < TIMEOUT_MIN_SECONDS:
        return None
    if session_has_mid_gap(session, silent, last.time, closing_act.time):
        return None
    evidence = [ev(last, f"last {who(closer)} words: {last.text}")]
    if announced is not None:
        evidence.append(ev(announced, f"timeout reply: {announced.text}"))
    evidence.append(ev(c, f"{who(closer)} {flag_name(c)}"))
    said = f", saying `{reply_code(announced)} {reply_text(announced)}`" if announced else ""
    accepted = accepted_messages(session)
    also = (f" {len(accepted)} message(s) had been accepted before." if accepted else "")
    return Finding(
        code="timeout",
        summary=f"The {who(silent)} went silent {_stage(last)} ({where(session, last)}); "
        f"the {who(closer)} waited {fmt_s(wait)} and closed ({where(session, c)}){said}.{also}",
        evidence=evidence,
        cannot_prove=f"whether the {who(silent)} sent something that was lost before reaching "
        f"the capture point, or never sent it",
        next_step=f"capture on the {who(silent)} side too and compare with `pcapsmtp compare`; "
        f"check the {who(silent)}'s log for this connection",
        verdict=True,
        severity="error",
    )


def _server_gave_up(session: Session, said: Event) -> Finding | None:
    """The server's timeout reply ended the dialogue: the client had gone silent.

    The server's own words decide it, whoever sends the first FIN afterwards (many
    clients hang up as soon as they read the 421), so no minimum silence is asked for.
    After an accepted message this is a note: the mail went through, and the client only
    failed to say QUIT (the ``ok`` verdict stands).
    """
    last = None
    for e in session.events:
        if e is said or (e.time, e.frame) >= (said.time, said.frame):
            break
        if not e.kind.startswith(NOT_DATA) and e.kind != "note":
            last = e
    if last is None:
        return None
    if session_has_mid_gap(session, "C", last.time, said.time):
        return None  # the client's words may be in the bytes the capture lacks
    wait = said.time - last.time
    mta = timeout_wording(said)
    whose = f", {mta}'s timeout reply" if mta else ", a timeout reply"
    c = first_close(session)
    closed = (f"; the {who(c.direction)} then closed ({flag_name(c)}, "
              f"{where(session, c)})") if c is not None else (
        "; the capture ended with the connection still open")
    evidence = [ev(last, f"last words before the silence: {short(last.text, 80)}"),
                ev(said, f"server's timeout reply: {said.text}")]
    if c is not None:
        evidence.append(ev(c, f"{who(c.direction)} {flag_name(c)}"))
    accepted = accepted_messages(session)
    summary = (f"The client went silent {_stage(last)} ({where(session, last)}); the server "
               f"waited {fmt_s(wait)} and gave up with `{short(said.text, 100)}` "
               f"({where(session, said)}{whose}){closed}.")
    if accepted:
        return Finding(
            code="client-idle-timeout",
            summary=f"{summary} {len(accepted)} message(s) had been accepted before: the client "
            "kept the connection open without QUIT until the server's idle timeout.",
            evidence=evidence,
            cannot_prove="why the client did not say QUIT (a connection cache that keeps "
            "sessions open, or a client that hung)",
            next_step="nothing is lost; if many sessions end this way, check the client's "
            "connection caching (Postfix: smtp_connection_cache_time_limit)",
            severity="info",
        )
    return Finding(
        code="timeout",
        summary=summary,
        evidence=evidence,
        cannot_prove="whether the client sent something that was lost before reaching the "
        "capture point, or never sent it",
        next_step="capture on the client side too and compare with `pcapsmtp compare`; check "
        "the client's log for this connection",
        verdict=True,
        severity="error",
    )


#: Commands after which the client must wait for the reply (RFC 2920 section 3.1).
MUST_WAIT = {"EHLO", "HELO", "DATA", "VRFY", "EXPN", "TURN", "QUIT", "NOOP", "STARTTLS", "AUTH"}
_SYNC_TEXT = re.compile(r"synchroni[sz]ation|pipelining|talking too soon|sending too soon|"
                        r"out of sequence", re.I)


def _first_frame_known(session: Session, e: Event) -> bool:
    """Whether ``e.first_frame`` really carried its first byte.

    When that byte lies in a capture gap, no frame carried it here: the frame
    the timeline names is the last one before the gap (in the PMTU black hole,
    the DATA command's frame), which must not read as "the body came with DATA".
    """
    start = e.fields.get("start")
    if not isinstance(start, int):
        return True
    for g in gaps(session, e.direction):
        off, length = g.fields.get("offset"), g.fields.get("length")
        if isinstance(off, int) and off <= start < off + int(length or 0):
            return False
    return True


@rule
@needs("smtp-reply")
def pipelining(session: Session) -> Finding | None:
    """``pipelining-violation``: the client talked before the reply it had to wait for.

    Three shapes: an early talker (bytes before the greeting), commands sent
    before the previous reply without PIPELINING advertised (or after a
    command RFC 2920 says must end a group), and the server's sync-error reply.
    Order is read from frame numbers: on either side of the wire, a command
    captured before a reply left (or arrived) before that reply could be read.
    A verdict only when the session failed (no message accepted, or the server
    complained); otherwise a note: the server tolerated it.
    """
    # One pass over the timeline gathers everything below (the greeting, the client's
    # first plaintext words, commands, bodies, which reply answered which command, the
    # sync-error replies): 23 -> 9 us a session on the 100k benchmark (answers() was
    # called once per queued command per reply, and five lists were built).
    g: Event | None = None  # greeting(session): the first reply answering CONNECT
    # the client's first plaintext words: a command, body, AUTH line or unparsed bytes
    first_talk: Event | None = None
    caps: set[str] = set()
    queue: list[tuple[str, Event]] = []  # (verb, command) awaiting a reply, oldest first
    reply_to: dict[int, Event] = {}  # id(command) -> the reply that answered it
    cmds: list[Event] = []  # plaintext commands
    bodies: list[Event] = []  # plaintext bodies
    sync: list[Event] = []  # 4xx/5xx replies complaining of the client's timing
    for e in session.events:
        kind = e.kind
        if kind == "smtp-reply":
            a = answers(e)
            if g is None and a == "CONNECT":
                g = e
            if reply_class(e) in (4, 5) and _SYNC_TEXT.search(reply_text(e)):
                sync.append(e)
            if e.tls or a == "CONNECT":
                continue
            # the dissector already paired it (pipelining-aware): trust its ``answers``
            for i, (v, match) in enumerate(queue):
                if v == a:
                    del queue[i]
                    reply_to[id(match)] = e
                    break
            else:
                continue
            if a == "EHLO" and reply_class(e) == 2:
                caps = {str(x).upper().split()[0] for x in e.fields.get("capabilities") or []
                        if str(x).strip()}
        elif e.tls:
            continue
        elif kind == "smtp-command":
            queue.append((verb(e), e))
            cmds.append(e)
            if first_talk is None and e.direction == "C":
                first_talk = e
        elif kind == "smtp-body":
            bodies.append(e)
            if first_talk is None and e.direction == "C":
                first_talk = e
        elif first_talk is None and kind in ("smtp-auth-data", "smtp-unparsed") \
                and e.direction == "C":
            first_talk = e
    found: list[tuple[Event, str]] = []
    if first_talk is not None and g is not None and first_talk.frame < g.frame:
        began = g.first_frame if g.first_frame is not None else g.frame
        when = ("before the server's greeting" if first_talk.frame < began else
                f"while the server's greeting was still arriving (it began in frame {began})")
        found.append((first_talk, f"the client sent {short(first_talk.text)!r} {when} "
                                   f"({where(session, g)}): an early talker"))
    advertised = "PIPELINING" in caps
    for a, b in zip(cmds, cmds[1:], strict=False):
        r = reply_to.get(id(a))
        if r is None or b.frame >= r.frame:
            continue
        if verb(a) in MUST_WAIT or not advertised:
            why = ("which must wait for its reply" if verb(a) in MUST_WAIT
                   else "and the server had not advertised PIPELINING")
            found.append((b, f"{short(b.text)!r} ({where(session, b)}) was sent before the "
                             f"reply to {verb(a)} ({where(session, r)}), {why}"))
            break
    for c in cmds:
        r = reply_to.get(id(c))
        if verb(c) != "DATA" or r is None or reply_code(r) != 354:
            continue
        # _first_frame_known (a look at the gaps) last: only for a body whose first byte
        # came before the 354, which most bodies' did not
        early = [b for b in bodies if c.frame <= b.frame < r.frame
                 or (b.first_frame is not None and c.frame <= b.first_frame < r.frame
                     and _first_frame_known(session, b))]
        if early:
            found.append((early[0], f"the message body ({where(session, early[0])}) was sent "
                                    f"before the 354 reply to DATA ({where(session, r)})"))
            break
    if not found and not sync:
        return None
    evidence = [ev(e, why) for e, why in found]
    evidence += [ev(s, f"server: {s.text}") for s in sync[:1]]
    # the server's reaction decides: a sync error, a failure reply, or an abnormal end
    failed = (bool(sync) or not orderly_close(session)
              or (deciding_failure(session) is not None and not accepted_messages(session)))
    parts = [why for _, why in found]
    if sync:
        parts.append(f"the server answered `{sync[0].text}` ({where(session, sync[0])})")
    summary = ("The client did not wait for the server: " + "; ".join(parts) + ". "
               + close_phrase(session)).strip()
    return Finding(
        code="pipelining-violation" if failed else "pipelining-tolerated",
        summary=summary,
        evidence=evidence,
        cannot_prove="whether a middlebox (an SMTP 'fixup' or proxy) changed the timing or "
        "split the segments; frame order is as seen at the capture point",
        next_step="check the client's SMTP software (pipelining support, pre-greeting "
        "talk is typical of spam bots); capture on the client side to compare",
        verdict=failed,
        severity="error" if failed else "info",
    )

