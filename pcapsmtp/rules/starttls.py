"""STARTTLS itself: refused by the server, or accepted and then not followed by TLS."""

from __future__ import annotations

from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    TIMEOUT_MIN_SECONDS,
    accepted_messages,
    close_phrase,
    commands,
    ev,
    f,
    first_close,
    fmt_s,
    log_time,
    plaintext_after_tls,
    replies,
    replies_to,
    reply_class,
    reply_code,
    reply_text,
    verb,
    where,
    who,
)
from pcapsmtp.timeline import Event, Session


@rule
@needs("smtp-reply")
def starttls_refused(session: Session) -> Finding | None:
    """``starttls-refused``: STARTTLS answered with 4xx/5xx.

    A verdict when the session then delivered nothing (a client that requires
    TLS gives up here); when the client went on in plaintext and a message was
    accepted, only a note -- mail flowed, unencrypted.
    """
    bad = [r for r in replies_to(session, "STARTTLS") if reply_class(r) in (4, 5)]
    if not bad:
        return None
    r = bad[0]
    cmd = next((c for c in commands(session) if verb(c) == "STARTTLS"
                and (c.time, c.frame) <= (r.time, r.frame)), None)
    evidence = [ev(x) for x in (cmd, r) if x is not None]
    delivered = [a for a in accepted_messages(session) if a.time > r.time]
    after = (f"the client went on without TLS and {len(delivered)} message(s) were accepted "
             "in plaintext" if delivered else close_phrase(session) or "no message followed")
    return Finding(
        code="starttls-refused" if not delivered else "starttls-refused-note",
        summary=f"The server refused STARTTLS with `{reply_code(r)} {reply_text(r)}` "
        f"({where(session, r)}) although it {'advertised' if _advertised(session) else 'was '}"
        f"{'' if _advertised(session) else 'asked for'} it; {after[0].lower() + after[1:]}",
        evidence=evidence,
        cannot_prove="why the server's TLS is unavailable (a missing key/certificate, a "
        "TLS library error, a per-client policy): the server's log says",
        next_step="check the server's log for TLS setup errors (Postfix: "
        f"`cannot load certificate`, `TLS library problem`) at {log_time(r.time)}",
        verdict=not delivered,
        severity="error" if not delivered else "warning",
    )


def _advertised(session: Session) -> bool:
    return any("STARTTLS" in (r.fields.get("capabilities") or []) for r in replies(session))


def _client_bytes_missing(session: Session, after: tuple[float, int],
                          instead: Event | None) -> bool:
    """Client bytes the capture lost after ``after`` (and before ``instead``): 'no
    ClientHello came' would be a guess."""
    for e in session.events:
        if instead is not None and (e.time, e.frame) >= (instead.time, instead.frame):
            return False
        if (e.time, e.frame) > after and e.direction == "C" and (
                e.kind == "tcp-gap" or (e.kind == "tls-desync" and f(e, "missing", default=0))):
            return True
    return False


@rule
@needs("smtp-reply")
def starttls_not_followed(session: Session) -> Finding | None:
    """``starttls-not-followed``: the server said 220 to STARTTLS; no ClientHello came.

    What came instead is the evidence: plaintext (a client that ignored the
    220, or a proxy that ate the STARTTLS), or nothing until someone closed.
    When the capture just ends right after the 220, that is not proof of
    anything: a note, and ``capture-incomplete`` speaks.
    """
    ok220 = [r for r in replies_to(session, "STARTTLS") if reply_code(r) == 220]
    if not ok220 or session.implicit_tls:
        return None
    r = ok220[0]
    t = (r.time, r.frame)
    if any((h.time, h.frame) > t for h in session.of_kind("tls-client-hello")):
        return None
    if plaintext_after_tls(session) is not None:
        return None  # both sides went on in plaintext: a capture of TLS decrypted
    instead = [e for e in session.events if (e.time, e.frame) > t and e.direction == "C"
               and e.kind in ("tls-not-tls", "smtp-command", "smtp-unparsed", "tls-malformed")]
    if _client_bytes_missing(session, t, instead[0] if instead else None):
        return None  # the ClientHello may be in them; capture-incomplete says so
    c = first_close(session)
    evidence = [ev(r, "server accepted STARTTLS")]
    if instead:
        i = instead[0]
        shown = f(i, "preview", default=None) or i.text
        what = (f"the client sent plaintext instead of a ClientHello ({where(session, i)}): "
                f"{shown!r}")
        evidence.append(ev(i, "client bytes after 220 are not TLS"))
    elif c is not None:
        what = (f"the client sent nothing; the {who(c.direction)} closed "
                f"{fmt_s(c.time - r.time)} later ({where(session, c)})")
    else:
        what = (f"the client sent nothing in the {fmt_s(session.last_time - r.time)} the "
                "capture lasted after it")
    if c is not None:
        evidence.append(ev(c))
    decided = bool(instead) or c is not None or (
        session.last_time - r.time >= TIMEOUT_MIN_SECONDS)
    return Finding(
        code="starttls-not-followed" if decided else "starttls-not-followed-note",
        summary=f"The server accepted STARTTLS (`220 {reply_text(r)}`, {where(session, r)}), "
        f"but no TLS ClientHello came: {what}.",
        evidence=evidence,
        cannot_prove="whether the client never started TLS or a middlebox between it and "
        "the capture point removed or rewrote the STARTTLS exchange",
        next_step="check the client's log (its TLS library may have failed before sending); "
        "capture on the client side to see whether it received the 220",
        verdict=decided,
        severity="error",
    )
