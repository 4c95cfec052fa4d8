"""TLS outcomes: alerts and closes during the handshake, silence after it, encrypted success.

What the TLS dissector infers (TLS 1.3 Finished from the record pattern) is
said to be inferred in the summaries: a reader must know which facts are seen
and which are read from sizes and order.
"""

from __future__ import annotations

import re

from dissectors.tls import alert_name, suite_name, version_name
from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    closes,
    ev,
    f,
    flag_name,
    fmt_s,
    gaps,
    log_time,
    offered_top_version,
    short,
    where,
    who,
)
from pcapsmtp.timeline import Event, Session

#: Alert descriptions and what they usually mean for a mail admin.
ALERT_HINTS = {
    "handshake_failure": "no protocol version or cipher suite in common",
    "insufficient_security": "the peer demands stronger ciphers than offered",
    "protocol_version": "no TLS version in common",
    "unknown_ca": "the certificate's issuer is not trusted by the sender of the alert",
    "bad_certificate": "the sender of the alert rejected the certificate",
    "certificate_expired": "the sender of the alert found the certificate expired",
    "certificate_unknown": "the sender of the alert could not validate the certificate",
    "unrecognized_name": "the server has no certificate for the name asked (SNI)",
    "decrypt_error": "a signature or Finished check failed",
    "illegal_parameter": "a handshake field was out of range",
    "internal_error": "the sender of the alert hit an internal error (often a library bug)",
}

OLD_SUITE_MARKERS = ("RC4", "3DES", "DES_CBC", "EXPORT", "NULL", "MD5")


def hello(session: Session) -> Event | None:
    return next(iter(session.of_kind("tls-client-hello")), None)


def negotiated_version(session: Session) -> int | None:
    if session.tls is not None and getattr(session.tls, "version", None):
        return session.tls.version
    sh = next(iter(session.of_kind("tls-server-hello")), None)
    return f(sh, "version") if sh else None


def version_text(session: Session) -> str:
    v = negotiated_version(session)
    return version_name(v).replace("TLS1", "TLS 1") if v else "TLS"


def offered(session: Session) -> str:
    """'TLS1.2 only, 12 suites, e.g. ...': the ClientHello in one clause."""
    h = hello(session)
    if h is None:
        return ""
    vmax = offered_top_version(h) or 0
    suites = [s for s in f(h, "cipher_suites", default=[]) if (s & 0x0F0F) != 0x0A0A]
    names = [suite_name(s) for s in suites]
    old = [n for n in names if any(m in n for m in OLD_SUITE_MARKERS)]
    txt = f"up to {version_name(vmax)}, {len(suites)} cipher suites"
    if suites and len(old) == len([n for n in names if "SCSV" not in n]):
        txt += f", all of them legacy (e.g. {', '.join(old[:3])})"
    return txt


def handshake_complete(session: Session) -> bool:
    if session.tls is not None:
        return bool(getattr(session.tls, "handshake_complete", False))
    fins = {e.direction for e in session.of_kind("tls-encrypted-handshake")
            if "Finished" in str(f(e, "what", default=""))
            and not str(f(e, "what", default="")).startswith("EncryptedExtensions")}
    return fins == {"C", "S"}


def completion_event(session: Session) -> Event | None:
    """The Finished that completed the handshake (the later side's), if it completed."""
    if not handshake_complete(session):
        return None
    done: dict[str, Event] = {}
    for e in session.of_kind("tls-encrypted-handshake"):
        what = str(f(e, "what", default=""))
        if what == "Finished" and e.direction not in done:
            done[e.direction] = e
    if not done:
        return None
    return max(done.values(), key=lambda e: (e.time, e.frame))


def tls_began(session: Session) -> Event | None:
    for e in session.events:
        if e.kind == "smtp-tls-start" or e.kind.startswith("tls-"):
            return e
    return None


def _close_text(session: Session, after: Event) -> tuple[str, Event | None]:
    later = [c for c in closes(session) if (c.time, c.frame) >= (after.time, after.frame)]
    if not later:
        return ("the capture ended with the connection open", None)
    c = later[0]
    kind = flag_name(c)
    return (f"the {who(c.direction)} closed {fmt_s(c.time - after.time)} later "
            f"({kind}, {where(session, c)})", c)


def _alert_name(a: Event) -> str | None:
    desc = f(a, "description")
    return alert_name(desc) if isinstance(desc, int) else None


def _alert_what(a: Event, article: bool = True) -> str:
    """'a fatal alert decode_error (50)' / 'an encrypted alert (...)'."""
    name = _alert_name(a)
    if not name:
        return "an encrypted alert (its description is not visible)"
    level = {1: "warning", 2: "fatal"}.get(f(a, "level"), "")
    what = f"{level} alert {name} ({f(a, 'description')})".strip()
    return (f"a {what}" if article else what)


def _handshake_alerts(session: Session) -> list[Event]:
    """Alerts sent before the handshake completed (afterwards: normally close_notify)."""
    if handshake_complete(session):
        done = completion_event(session)
        return [a for a in session.of_kind("tls-alert")
                if done is None or (a.time, a.frame) < (done.time, done.frame)]
    return session.of_kind("tls-alert")


def _peer_closed_before(session: Session, a: Event) -> Event | None:
    """The other side's FIN/RST that came before alert ``a``, if any."""
    for c in closes(session):
        if (c.time, c.frame) >= (a.time, a.frame):
            return None
        if c.direction != a.direction:
            return c
    return None


def _after_lost_records(session: Session, a: Event) -> bool:
    """Alert ``a`` is encrypted and whole records of its sender went unseen before it (a
    desync): its ChangeCipherSpec and Finished may be among them, so the handshake may
    have completed and the alert be the close_notify of an orderly end."""
    if not f(a, "encrypted", default=False):
        return False
    return any(e.kind == "tls-desync" and e.direction == a.direction
               and f(e, "missing", default=0) and (e.time, e.frame) <= (a.time, a.frame)
               for e in session.events)


def deciding_alert(session: Session) -> Event | None:
    """The handshake alert that decides the verdict, if one does.

    An alert decides only when it precedes the other side's FIN/RST: an alert
    sent after the peer already closed is the sender's reaction to that close
    (a client answering a bare FIN with decode_error), not its cause.  Nor does
    an encrypted alert after records of its sender were lost (``_after_lost_records``).
    """
    alerts = _handshake_alerts(session)
    if not alerts or _peer_closed_before(session, alerts[0]) is not None \
            or _after_lost_records(session, alerts[0]):
        return None
    return alerts[0]


def _answered(e: Event) -> str:
    """The other side's TLS event an alert came after, as a phrase."""
    if e.kind == "tls-desync" and f(e, "missing", default=0):
        return f"{f(e, 'missing')} {who(e.direction)} bytes the capture does not hold"
    if e.kind == "tls-not-tls":
        return f"the {who(e.direction)}'s bytes that are not TLS"
    return f"the {who(e.direction)}'s {e.text.split('  ')[0]}"


@rule
@needs("tls-alert")
def handshake_alert(session: Session) -> Finding | None:
    """``tls-handshake-alert``: an alert ended the handshake; name its sender and description.

    Only alerts before the handshake completed: afterwards an (encrypted)
    alert is normally close_notify, part of an orderly end.  And only an alert
    that came before the other side closed: after it, the alert is a reaction
    (``closed_during_handshake`` names the close and mentions the alert).
    """
    a = deciding_alert(session)
    if a is None:
        return None
    name = _alert_name(a)
    what = _alert_what(a, article=False)
    hint = ALERT_HINTS.get(name or "", "")
    h = hello(session)
    evidence = []
    if h is not None:
        evidence.append(ev(h, f"ClientHello: {offered(session)}"))
    evidence.append(ev(a, f"{who(a.direction)} alert: {name or 'encrypted'}"))
    closing, c = _close_text(session, a)
    if c is not None:
        evidence.append(ev(c))
    prev = [e for e in session.events if e.kind.startswith("tls-") and e is not a
            and (e.time, e.frame) <= (a.time, a.frame) and e.direction != a.direction]
    answering = f" in answer to {_answered(prev[-1])} ({where(session, prev[-1])})" \
        if prev else ""
    ch = f" The ClientHello offered {offered(session)}." if h is not None else ""
    cannot, step = _alert_advice(a, name, h)
    return Finding(
        code="tls-handshake-alert",
        summary=f"The {who(a.direction)} sent a TLS {what} during the handshake "
        f"({where(session, a)}){answering}{': ' + hint if hint else ''}; {closing}.{ch}",
        evidence=evidence,
        cannot_prove=cannot,
        next_step=step,
        verdict=True,
        severity="error",
    )


def _alert_advice(a: Event, name: str | None, h: Event | None) -> tuple[str, str]:
    """(what the capture cannot prove, the next step) for a handshake alert.  A server's
    protocol_version to a ClientHello leaves no doubt about the cause (none of the offered
    versions is accepted), only about the server's minimum; the usual case is an old
    sender against a server hardened to TLS 1.2 and later."""
    top = offered_top_version(h) if h is not None else None
    if name == "protocol_version" and a.direction == "S" and top is not None:
        v = version_name(top)
        return (f"which version the server requires: it accepts none up to {v}",
                f"enable TLS1.2 or later on the client (its TLS library or settings); or, "
                f"knowing the risk, let the server accept {v} (Postfix: smtpd_tls_protocols)")
    return ("which exact setting caused it: the alert names the category, the "
            f"{who(a.direction)}'s TLS log names the reason",
            f"check the {who(a.direction)}'s log for the TLS error at {log_time(a.time)}; "
            "compare "
            "the offered versions/suites with the other side's TLS policy "
            "(`openssl s_client -starttls smtp -connect host:25`)")


def _stage(session: Session) -> tuple[str, Event | None]:
    """Where the handshake stood: the last handshake step and who owed the next one."""
    hs = [e for e in session.events if e.kind in (
        "tls-client-hello", "tls-server-hello", "tls-hello-retry-request", "tls-certificate",
        "tls-handshake", "tls-ccs", "tls-encrypted-handshake")]
    if not hs:
        return ("before any TLS handshake message", None)
    last = hs[-1]
    kinds = {e.kind for e in hs}
    if "tls-server-hello" not in kinds and "tls-hello-retry-request" not in kinds:
        return ("during ClientHello: the server never answered the client's ClientHello", last)
    server_done = any(f(e, "name") == "ServerHelloDone" for e in hs)
    client_moved = any(e.direction == "C" and e.kind != "tls-client-hello" for e in hs)
    v = negotiated_version(session)
    if v == 0x0304:
        if not client_moved or all(e.kind == "tls-ccs" for e in hs
                                   if e.direction == "C" and e.kind != "tls-client-hello"):
            return ("after the server's TLS 1.3 flight (ServerHello..Finished, encrypted): the "
                    "client never sent its Finished (often: it rejected the certificate)", last)
        return ("after the client's Finished (inferred): the server did not continue", last)
    if not client_moved:
        stage = "ServerHelloDone" if server_done else "ServerHello/Certificate"
        return (f"after the server's {stage}: the client never sent its key exchange "
                "(often: it rejected the certificate or the parameters)", last)
    server_fin = any(e.kind == "tls-encrypted-handshake" and e.direction == "S" for e in hs)
    if not server_fin:
        return ("after the client's key exchange and Finished: the server never sent its "
                "ChangeCipherSpec/Finished", last)
    return (f"at {last.text}", last)


@rule
@needs("smtp-unparsed", "tls-client-hello", "tls-not-tls")
def closed_during_handshake(session: Session) -> Finding | None:
    """``tls-closed-during-handshake``: FIN/RST with no alert, at a named handshake stage.

    Also covers the two ways TLS and plaintext miss each other: a client that
    sends a ClientHello on a plaintext port without STARTTLS (it expects
    implicit TLS, port 465), and a server that answers a ClientHello with
    plaintext (the client's TLS has nobody to talk to).
    """
    raw_tls = [e for e in session.of_kind("smtp-unparsed")
               if e.direction == "C" and f(e, "reason") == "tls-record"]
    if raw_tls and not session.of_kind("tls-client-hello"):
        u = raw_tls[0]
        closing, c = _close_text(session, u)
        evidence = [ev(u, "client bytes are a TLS record, in plaintext SMTP")]
        if c is not None:
            evidence.append(ev(c))
        return Finding(
            code="tls-closed-during-handshake",
            summary=f"The client sent a TLS record (a ClientHello) on a plaintext SMTP "
            f"connection without STARTTLS ({where(session, u)}): it expects implicit TLS "
            f"(as on port 465), the server speaks plaintext SMTP; {closing}.",
            evidence=evidence,
            cannot_prove="which side is misconfigured: the port, or the client's TLS mode",
            next_step="configure the client for STARTTLS on this port, or use port 465 "
            "(smtps/submissions) with implicit TLS",
            verdict=c is not None,
            severity="error",
        )
    if session.implicit_tls and not session.of_kind("tls-client-hello"):
        client_plain = [n for n in session.of_kind("tls-not-tls") if n.direction == "C"]
        if client_plain:
            return _client_plaintext(session, client_plain[0])
    if tls_began(session) is None or handshake_complete(session):
        return None
    if deciding_alert(session) is not None:
        return None  # handshake_alert speaks
    alerts = _handshake_alerts(session)
    if alerts and _after_lost_records(session, alerts[0]):
        return None  # the handshake may have ended in the lost records: capture-incomplete
    if not session.of_kind("tls-client-hello"):
        return None  # no ClientHello after STARTTLS: starttls.py speaks
    not_tls = [e for e in session.of_kind("tls-not-tls")]
    srv_plain = [n for n in not_tls if n.direction == "S"]
    if srv_plain:
        return _server_plaintext(session, srv_plain[0])
    stage, last = _stage(session)
    anchor = last or tls_began(session)
    assert anchor is not None
    evidence = [ev(hello(session) or anchor, f"ClientHello: {offered(session)}")]
    if last is not None and last is not hello(session):
        evidence.append(ev(last, f"last handshake step: {last.text}"))
    extra = ""
    if not_tls:
        n = not_tls[0]
        evidence.append(ev(n, f"{who(n.direction)} sent non-TLS bytes"))
        extra = (f" The {who(n.direction)} then sent bytes that are not TLS "
                 f"({where(session, n)}): {short(str(f(n, 'preview', default='')))!r}.")
        anchor = n
    closing, c = _close_text(session, anchor)
    if c is not None:
        evidence.append(ev(c))
    elif not not_tls:
        return None  # capture ended mid-handshake: capture-incomplete speaks
    alert_txt = "no alert was sent"
    closer = f"{who(c.direction)}" if c is not None else "closing side"
    late = [a for a in _handshake_alerts(session) if c is not None
            and (a.time, a.frame) > (c.time, c.frame) and a.direction != c.direction]
    if late and c is not None:
        a = late[0]
        alert_txt = "no alert came before the close"
        extra += (f" The {who(a.direction)} reacted to the {who(c.direction)}'s close with "
                  f"{_alert_what(a)} ({where(session, a)}): a consequence of the close, "
                  "not its cause.")
        evidence.append(ev(a, f"{who(a.direction)} alert after the close: "
                              f"{_alert_name(a) or 'encrypted'}"))
        after = [x for x in closes(session) if (x.time, x.frame) > (a.time, a.frame)]
        if after:
            r = after[0]
            extra += (f" The {who(r.direction)}'s stack then sent "
                      f"{'RST' if r.kind == 'tcp-rst' else 'FIN'} ({where(session, r)}).")
            evidence.append(ev(r))
    return Finding(
        code="tls-closed-during-handshake",
        summary=f"The TLS handshake stopped {stage} ({where(session, anchor)}); {alert_txt}; "
        f"{closing}.{extra}",
        evidence=evidence,
        cannot_prove=f"why the {closer} gave up: without an alert only its TLS log says "
        "(a cipher/version mismatch, certificate check, or a middlebox cutting TLS)",
        next_step=f"check the TLS error in the {closer}'s log at {log_time(anchor.time)}; "
        "test the "
        "handshake with `openssl s_client -starttls smtp -connect host:25` from the client",
        verdict=c is not None,
        severity="error",
    )


def _client_plaintext(session: Session, n: Event) -> Finding | None:
    """The client's first bytes on an implicit-TLS port (465) are not TLS: it speaks
    plaintext SMTP, or another protocol, where the server waits for a ClientHello. Not a
    capture problem and not a reset out of the blue: the server's TLS could not start."""
    closing, c = _close_text(session, n)
    preview = short(str(f(n, "preview", default="")))
    evidence = [ev(n, f"client's first bytes are not TLS: {preview!r}")]
    if c is not None:
        evidence.append(ev(c))
    alert = [a for a in session.of_kind("tls-alert") if a.direction == "S"]
    said = (f"the server answered with {_alert_what(alert[0])} ({where(session, alert[0])}) "
            "and" if alert else "no alert came;")
    return Finding(
        code="tls-closed-during-handshake",
        summary=f"The client's first bytes on port {session.server[1]}, where TLS starts at "
        f"once, are not TLS ({where(session, n)}): {preview!r}, so no handshake began; "
        f"{said} {closing}.",
        evidence=evidence,
        cannot_prove="whether the client meant STARTTLS on another port or is not a mail "
        "client at all",
        next_step=f"configure the client for implicit TLS on port {session.server[1]} "
        "(smtps/submissions), or for STARTTLS on port 25 or 587",
        verdict=c is not None,
        severity="error",
    )


#: A plaintext SMTP failure reply where TLS records belonged: Sendmail's "403 4.7.0 TLS
#: handshake failed.", GroupWise's "450 TLS negotiation failure".
_FAILURE_REPLY = re.compile(r"[45]\d\d[ -]")


def _server_plaintext(session: Session, n: Event) -> Finding | None:
    """The server answers TLS with plaintext: a port/TLS-mode mismatch, not a broken handshake
    -- unless, after STARTTLS, it is a 4xx/5xx reply: the server gave up the handshake and
    said so in SMTP (Sendmail, GroupWise), which the design notes' real cases name."""
    preview = str(f(n, "preview", default=""))
    if not session.implicit_tls and _FAILURE_REPLY.match(preview):
        return _handshake_failed_reply(session, n, preview)
    closing, c = _close_text(session, n)
    port = session.server[1]
    hint = (f" On port {port} the client expects implicit TLS and the server greets in "
            "plaintext: the server is not set up for it (Postfix: "
            "`smtpd_tls_wrappermode = yes` on the 465 service)." if session.implicit_tls else "")
    evidence = sorted([ev(n, "server bytes are plaintext, not TLS")]
                      + ([ev(hello(session), f"ClientHello: {offered(session)}")]
                         if hello(session) else [])
                      + ([ev(c)] if c is not None else []),
                      key=lambda x: (x.time or 0, x.frame or 0))
    return Finding(
        code="tls-closed-during-handshake",
        summary=f"The server does not speak TLS here: it sent plaintext "
        f"{short(preview)!r} ({where(session, n)}) where a ServerHello belonged, so no "
        f"handshake could start; {closing}.{hint}",
        evidence=evidence,
        cannot_prove="whether a proxy in between answers instead of the real server",
        next_step="check which port/TLS mode each side is configured for (implicit TLS on 465, "
        "STARTTLS on 25/587); `openssl s_client -connect host:465` shows the same",
        verdict=True,
        severity="error",
    )


def _handshake_failed_reply(session: Session, n: Event, preview: str) -> Finding:
    reply = preview.split("\\r\\n")[0].split("\\n")[0]
    closing, c = _close_text(session, n)
    h = hello(session)
    after = f"the client's ClientHello ({where(session, h)}: {offered(session)})" \
        if h is not None else "the client's first TLS bytes"
    evidence = [ev(x, what) for x, what in (
        (h, "ClientHello"), (n, f"server, in plaintext: {reply}"), (c, None)) if x is not None]
    return Finding(
        code="tls-closed-during-handshake",
        summary=f"The TLS handshake failed at the server: after {after} it sent no "
        f"ServerHello and no alert but a plaintext SMTP reply, `{reply}` "
        f"({where(session, n)}), as Sendmail and GroupWise do when they give up a "
        f"handshake; {closing}.",
        evidence=evidence,
        cannot_prove="why the server gave up: the ClientHello above is what it judged; its "
        "TLS log names the reason",
        next_step=f"check the server's log at {log_time(n.time)} (Sendmail: "
        "'STARTTLS=server, error: "
        "accept failed', with the OpenSSL reason); compare the offered versions/suites with "
        "its TLS settings",
        verdict=True,
        severity="error",
    )


def _records_after(session: Session, direction: str, t: tuple[float, int]) -> list[Event]:
    return [e for e in session.of_kind("tls-app-data")
            if e.direction == direction and (e.time, e.frame) > t]


def _retransmissions_of(session: Session, rec: Event) -> list[Event]:
    """Later TCP retransmissions carrying bytes of record ``rec`` (its sender had no ACK)."""
    start, end = rec.fields.get("start"), rec.fields.get("end")
    out = []
    for r in session.of_kind("tcp-retransmission"):
        if r.direction != rec.direction or (r.time, r.frame) <= (rec.time, rec.frame):
            continue
        off, length = r.fields.get("offset"), r.fields.get("length")
        if isinstance(start, int) and isinstance(end, int) and isinstance(off, int):
            if off < end and off + int(length or 0) > start:
                out.append(r)
        elif r.fields.get("original_frame") == rec.frame:
            out.append(r)
    return out


def _lost_after(session: Session, direction: str, t_done: tuple[float, int]) -> list[Event]:
    """``sent-unseen`` gaps after the handshake: bytes the sender's sequence numbers prove
    it sent, which never reached the capture point and which the receiver never acknowledged
    (an ACK from the receiver would have made them an ``acked-unseen`` gap instead)."""
    return [g for g in gaps(session, direction) if f(g, "reason") == "sent-unseen"
            and (g.time, g.frame) > t_done]


@rule
@needs("tls-encrypted-handshake")
def silent_after_handshake(session: Session) -> Finding | None:
    """``tls-client-silent-after-handshake`` / ``tls-server-silent-after-handshake``.

    After STARTTLS the client speaks first (EHLO); on implicit TLS the server
    does (its banner).  The side that owed the first record and sent none is
    silent; if it did, and the other never answered after it, that side is.
    (A TLS 1.3 server's NewSessionTickets travel as application data before
    the client's first record; only records after it count as an answer.)

    A record the sender still retransmitted after the peer's later records was
    never acknowledged: those records (an encrypted 421 before the close) are
    the peer giving up, not an answer.  The verdict needs a close after the
    silence; the capture ending before the *other* side's FIN does not void it.
    A ``sent-unseen`` gap in the silent side's direction after the handshake is
    what the capture point saw of a record lost on the way: the verdict stands
    (it is what this side saw) and the summary says the bytes were sent.
    """
    done = completion_event(session)
    if done is None:
        return None
    first_speaker = "S" if session.implicit_tls else "C"
    t_done = (done.time, done.frame)
    owed = _records_after(session, first_speaker, t_done)
    rts: list[Event] = []
    late_records: list[Event] = []
    if owed:
        first = owed[0]
        answer_side = "S" if first_speaker == "C" else "C"
        rts = _retransmissions_of(session, first)
        last_rt = (rts[-1].time, rts[-1].frame) if rts else None
        later = _records_after(session, answer_side, (first.time, first.frame))
        answered = [r for r in later if last_rt is None or (r.time, r.frame) > last_rt]
        if answered:
            return None
        late_records = later
        silent, anchor = answer_side, first
    else:
        silent, anchor = first_speaker, done
    lost = _lost_after(session, silent, t_done) if anchor is done else []
    if any(g not in lost for g in gaps(session, silent)):
        return None  # the silent side's bytes may be in what the capture lacks
    closing, c = _close_text(session, anchor)
    if c is None:
        return None  # nobody gave up within the capture: capture-incomplete speaks
    # The first speaker's record went unacknowledged (retransmitted after the peer's later
    # records) and the peer's only later records are its giving up: seen from the first
    # speaker's side, the peer behaved as toward a silent client, and nothing here proves
    # the peer silent (issue 16). The verdict is the one the peer's side sees, said so.
    unacked = bool(rts and late_records)
    verdict_silent = first_speaker if unacked else silent
    code = ("tls-client-silent-after-handshake" if verdict_silent == "C"
            else "tls-server-silent-after-handshake")
    speaker = who(other_of(silent))
    inferred = bool(f(done, "inferred", default=False))
    fin_txt = (f"{version_text(session)} handshake completed ("
               f"{who(done.direction)} Finished{', inferred' if inferred else ''}, "
               f"{where(session, done)})")
    evidence = [ev(done, f"handshake complete: {who(done.direction)} Finished"
                         f"{' (inferred from record order)' if inferred else ''}")]
    cannot = (f"whether the {who(silent)} sent the record and it was lost on the way "
              f"(a middlebox, an MTU problem) or never sent it")
    step = (f"capture on the {who(silent)} side too, and compare with `pcapsmtp compare`; "
            f"check the {who(silent)}'s log for a TLS or timeout error at "
            f"{log_time(done.time)}")
    if anchor is done and lost:
        g = lost[0]
        n = sum(int(f(x, "length", default=0)) for x in lost)
        body = (f"no TLS record from the {who(silent)} arrived here afterwards, but the "
                f"{who(silent)}'s sequence numbers show it sent {n} bytes after the handshake "
                f"({where(session, g)}) that never arrived here: its first TLS record was lost "
                f"between the {who(silent)} and this capture point, and the "
                f"{speaker} never acknowledged it")
        evidence.append(ev(g, f"{who(silent)} segment whose sequence number is {n} bytes "
                              "beyond what arrived: sent, never captured, never acknowledged"))
        mtu = "" if n >= 1000 else f"; {n} bytes is too small for an MTU problem"
        cannot = (f"where between the {who(silent)} and this capture point the record was "
                  f"dropped (a firewall, IPS or TLS/SMTP-inspecting middlebox{mtu}), and what "
                  "it said (it is encrypted)")
        step = (f"capture on the {who(silent)} side too: its first record and the "
                f"retransmissions of it should be there (compare with `pcapsmtp compare`); "
                f"check the path between the {who(silent)} and this point (firewall, IPS, "
                "TLS or SMTP inspection) for drops of TLS application records")
    elif anchor is done:
        body = f"the {who(silent)} sent no TLS record afterwards"
    else:
        body = (f"the {speaker} sent its first record ({where(session, anchor)}) and the "
                f"{who(silent)} never answered it")
        evidence.append(ev(anchor, f"{speaker}'s first application record"))
        if rts:
            last = rts[-1]
            body += (f": the {speaker} retransmitted it {len(rts)} time(s) over "
                     f"{fmt_s(last.time - anchor.time)} (last {where(session, last)}), so no "
                     f"acknowledgement came back")
            evidence += [ev(r, f"{speaker} retransmits its first record") for r in rts[:3]]
            if len(rts) > 3:
                evidence.append(ev(last, f"{speaker} retransmits its first record (last)"))
            cannot = (f"whether the record was lost on the way to the {who(silent)} or the "
                      f"{who(silent)}'s acknowledgements on the way back; a capture on the "
                      f"{who(silent)} side tells (if the record is missing there, the path "
                      "dropped it)")
            step = (f"capture on the {who(silent)} side too and compare with `pcapsmtp "
                    f"compare`; check the path (firewall, IPS, TLS or SMTP inspection) for "
                    f"drops of TLS application records; check the {who(silent)}'s log for "
                    "this connection (a timeout waiting for the client's command)")
        if late_records:
            r = late_records[0]
            body += (f". The {who(silent)}'s only later record(s) ({len(late_records)}, from "
                     f"{where(session, r)}) did not acknowledge it: they are the "
                     f"{who(silent)} giving up (typically an encrypted 421 timeout), not an "
                     "answer")
            evidence.append(ev(r, f"{who(silent)} record that does not acknowledge the "
                                  f"{speaker}'s record"))
        if unacked:
            body = (f"the {speaker} sent its first record ({where(session, anchor)}) and "
                    f"retransmitted it {len(rts)} time(s) (last {where(session, rts[-1])}): "
                    f"no acknowledgement came, so it most likely never reached the "
                    f"{who(silent)}. The {who(silent)} then acted as toward a silent "
                    f"{speaker}: its only later record(s) ({len(late_records)}, from "
                    f"{where(session, late_records[0])}) are its timeout, not an answer. Seen "
                    f"from the {who(silent)}, the {speaker} was silent; this capture cannot "
                    f"show the {who(silent)} was")
            cannot = (f"whether the record reached the {who(silent)} (and only the "
                      f"acknowledgements were lost) or was dropped on the way; a capture on "
                      f"the {who(silent)} side tells")
    other_records = [e for e in _records_after(session, other_of(silent), (anchor.time,
                                                                           anchor.frame))
                     if e is not anchor]
    if other_records and anchor is done:
        r = other_records[0]
        body += (f"; the {who(r.direction)} sent {len(other_records)} encrypted record(s) "
                 f"{fmt_s(r.time - done.time)} later ({where(session, r)}), its timeout "
                 "message (Exchange: `451 4.7.0 Timeout waiting for client input`, Postfix: "
                 "`421 4.4.2 ... Error: timeout exceeded`)")
        evidence.append(ev(r))
    evidence.append(ev(c))
    evidence.sort(key=lambda x: (x.time or 0.0, x.frame or 0))
    closing = closing[0].upper() + closing[1:]
    if session.open_at_end:
        closing += f"; the capture ended before the {who(other_of(c.direction))}'s FIN"
    return Finding(
        code=code,
        summary=f"{fin_txt}; {body}. {closing}.",
        evidence=evidence,
        cannot_prove=cannot,
        next_step=step,
        verdict=True,
        severity="error",
    )


def other_of(direction: str) -> str:
    return "S" if direction == "C" else "C"


def _decrypted(session: Session) -> bool:
    """The TLS engine's key-log pass put decrypted SMTP into the timeline."""
    return any(e.fields.get("decrypted") for e in session.of_kind("smtp-reply", "smtp-command"))


#: The fewest bytes of SMTP that carry a message after the EHLO: ``MAIL FROM:<>``,
#: ``RCPT TO:<a>``, ``DATA`` with their CRLFs and an empty body's ``.`` line (36); BDAT's
#: ``BDAT 0 LAST`` is longer than DATA and the dot.
MIN_MESSAGE_BYTES = len("MAIL FROM:<>\r\nRCPT TO:<a>\r\nDATA\r\n.\r\n")
#: The least a TLS record adds to what it carries: TLS 1.3 an AEAD tag and the content
#: type byte; TLS 1.2 an AEAD tag (ChaCha20-Poly1305; GCM adds 8 more, CBC far more).
#: The least, so the estimate of what a record holds is an upper bound.
_RECORD_OVERHEAD = {0x0304: 17}
_RECORD_OVERHEAD_DEFAULT = 16


def _room(session: Session, records: list[Event]) -> int:
    """At most how many bytes of plaintext ``records`` carry."""
    overhead = _RECORD_OVERHEAD.get(negotiated_version(session) or 0, _RECORD_OVERHEAD_DEFAULT)
    return sum(max(0, int(f(e, "length", default=0)) - overhead) for e in records)


def _room_after_first_turn(session: Session, c_recs: list[Event], s_recs: list[Event]) -> int:
    """At most how many bytes of SMTP the client sent after its first turn (the EHLO).

    A turn is what the client sends before the server answers; the EHLO must wait for its
    reply (RFC 2920), so whatever message follows travels in later turns.  A client that
    skips the EHLO after STARTTLS and puts MAIL, RCPT and DATA first still needs a later
    turn for the body and its headers, which alone are longer than the bound.
    """
    first_c = c_recs[0]
    answered = next((r for r in s_recs if (r.time, r.frame) > (first_c.time, first_c.frame)),
                    None)
    if answered is None:
        return 0
    later = [e for e in c_recs if (e.time, e.frame) > (answered.time, answered.frame)]
    return _room(session, later)


@rule
@needs("tls-encrypted-handshake")
def encrypted_ok(session: Session) -> Finding | None:
    """``ok`` for an encrypted dialogue -- honestly labelled as unverifiable.

    Decision: when the handshake completed, both sides exchanged application
    data (the server answered the client's records), no alert came during the
    handshake and the connection closed with a FIN or after close_notify, the
    verdict is ``ok``: nothing on the wire says it failed.  The summary says
    plainly that the SMTP dialogue was encrypted, so the capture cannot show
    whether a message was accepted (``ok-no-mail`` would claim what we cannot
    see either way).  ``cannot_prove`` repeats it for scripts.  Not when a key log
    decrypted the dialogue (``--keylog``): the decrypted commands and replies show
    what happened, and the rules that read them judge it.
    """
    done = completion_event(session)
    if done is None or session.open_at_end or _decrypted(session):
        return None
    t_done = (done.time, done.frame)
    c_recs = _records_after(session, "C", t_done)
    s_recs = _records_after(session, "S", t_done)
    if not c_recs or not s_recs:
        return None
    first_speaker = "S" if session.implicit_tls else "C"
    first = (c_recs if first_speaker == "C" else s_recs)[0]
    if not _records_after(session, other_of(first_speaker), (first.time, first.frame)):
        return None
    cl = closes(session)
    notify = [a for a in session.of_kind("tls-alert") if (a.time, a.frame) > t_done]
    if not cl or (cl[0].kind == "tcp-rst" and not notify):
        return None
    c = cl[0]
    c_bytes = sum(int(f(e, "length", default=0)) for e in c_recs)
    s_bytes = sum(int(f(e, "length", default=0)) for e in s_recs)
    closed = f"the {who(c.direction)} closed ({flag_name(c)}, {where(session, c)})"
    room = _room_after_first_turn(session, c_recs, s_recs)
    total = _room(session, c_recs)
    if room < MIN_MESSAGE_BYTES:
        return Finding(
            code="ok-no-mail",
            summary=f"{version_text(session)} handshake completed ({where(session, done)}) and "
            f"the dialogue continued encrypted (client {len(c_recs)} records, {c_bytes} bytes; "
            f"server {len(s_recs)} records, {s_bytes} bytes); {closed}. Inferred from "
            f"the record sizes: the client's records hold at most {total} bytes of SMTP, "
            f"{room} of them after its first command (normally EHLO, which waits for its "
            f"reply); MAIL, RCPT, DATA and a message take at least {MIN_MESSAGE_BYTES}: "
            "no message was sent.",
            evidence=[ev(done, "handshake complete"), ev(c_recs[0], "client's first record"),
                      ev(c_recs[-1], "client's last record"), ev(c)],
            cannot_prove="what the encrypted commands were: only that they were too short to "
            "carry a message",
            next_step="if a message was expected, check the client's log for this connection",
            verdict=True,
            severity="info",
        )
    return Finding(
        code="ok",
        summary=f"{version_text(session)} handshake completed ({where(session, done)}) and the "
        f"dialogue continued encrypted: client {len(c_recs)} records ({c_bytes} bytes), "
        f"server {len(s_recs)} records ({s_bytes} bytes); {closed}. The SMTP "
        f"dialogue was encrypted: after its first command the client sent up to {room} bytes, "
        "room for a message, but this capture cannot show whether a message was accepted.",
        evidence=[ev(done, "handshake complete"), ev(c_recs[0], "client's first record"),
                  ev(s_recs[-1], "server's last record"), ev(c)],
        cannot_prove="whether any message was accepted or refused inside TLS",
        next_step="match the time with the server's mail log (queue ID), or decrypt with "
        "a key log (SSLKEYLOGFILE) in Wireshark",
        verdict=True,
        severity="info",
    )


