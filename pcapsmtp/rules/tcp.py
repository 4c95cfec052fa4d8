"""TCP-level outcomes: never answered, refused, reset, and the PMTU black hole."""

from __future__ import annotations

from collections import defaultdict

from pcapsmtp.rules import Finding, rule
from pcapsmtp.rules._common import (
    TIMEOUT_MIN_SECONDS,
    closes,
    data_events,
    ev,
    first_close,
    flags,
    fmt_s,
    greeting,
    orderly_close,
    quit_answered,
    where,
    who,
)
from pcapsmtp.timeline import Event, Session

#: Segments at least this long count as "full-size" for the PMTU test.
FULL_SIZE = 1000


def _established(session: Session) -> bool:
    return bool(flags(session, "tcp-syn-ack")) or bool(data_events(session, "S"))


@rule
def no_answer(session: Session) -> Finding | None:
    """``tcp-no-answer``: SYNs and nothing back -- no SYN-ACK, no RST, no data.

    Not when the client sent data: then the server did answer and the capture
    missed that direction (``capture.py`` says so).
    """
    syns = flags(session, "tcp-syn", "C")
    if not syns or _established(session) or data_events(session, "C"):
        return None
    if any(e.direction == "S" for e in session.events):
        return None
    span = syns[-1].time - syns[0].time
    listed = ", ".join(str(s.frame) for s in syns[:6]) + (", ..." if len(syns) > 6 else "")
    return Finding(
        code="tcp-no-answer",
        summary=f"The client sent {len(syns)} SYN(s) over {fmt_s(span)} (frames {listed}); "
        "the server never answered (no SYN-ACK, no RST).",
        evidence=[ev(s, "SYN" + (" (retry)" if s.fields.get("repeat") else "")) for s in syns[:6]],
        cannot_prove="whether the SYNs reached the server: a firewall drop, a ban (fail2ban), "
        "a host that is down and a routing problem all look alike from here",
        next_step="capture on the server side (does the SYN arrive?); check its firewall and "
        "fail2ban (`fail2ban-client status`) for the client address",
        verdict=True,
        severity="error",
    )


@rule
def refused(session: Session) -> Finding | None:
    """``tcp-refused``: the SYN was answered with RST: nothing listens, or a filter rejects."""
    syns = flags(session, "tcp-syn", "C")
    rsts = flags(session, "tcp-rst", "S")
    if not syns or not rsts or flags(session, "tcp-syn-ack") or data_events(session, "S"):
        return None
    r = rsts[0]
    return Finding(
        code="tcp-refused",
        summary=f"The server answered the client's SYN ({where(session, syns[0])}) with RST "
        f"({where(session, r)}): nothing accepts connections on port {session.server[1]} "
        "there, or a filter rejects this client.",
        evidence=[ev(syns[0], "SYN"), ev(r, "RST from the server")],
        cannot_prove="whether the RST came from the server itself or from a firewall in front "
        "of it (both send the same RST)",
        next_step=f"on the server: is the MTA listening on port {session.server[1]} "
        "(`ss -ltn`)? any REJECT rule for the client address?",
        verdict=True,
        severity="error",
    )


def _stage(session: Session, before: Event) -> str:
    """Where the dialogue stood when ``before`` (the close) happened."""
    words = [e for e in session.events if (e.time, e.frame) < (before.time, before.frame)
             and not e.kind.startswith("tcp-") and e.kind != "note"]
    if not words:
        return "before any SMTP was exchanged"
    last = words[-1]
    if last.kind.startswith("tls-") or last.tls:
        return f"inside TLS, after {last.text} ({where(session, last)})"
    return f"after {who(last.direction)}'s {last.text!r} ({where(session, last)})"


@rule
def reset(session: Session) -> Finding | None:
    """``tcp-reset``: a RST ended an established session; say who, and at which stage.

    A RST after QUIT was answered, or after an orderly FIN, is how many stacks
    tidy up, not an ending.  A server that closes right after the handshake
    without a greeting is reported here too (its FIN, then the RST).
    """
    if not _established(session):
        return None
    rsts = flags(session, "tcp-rst")
    if not rsts:
        return None
    q = quit_answered(session)
    if q is not None and (q.time, q.frame) < (rsts[0].time, rsts[0].frame):
        return None
    first = first_close(session)
    assert first is not None
    r = rsts[0]
    if first.kind == "tcp-fin":
        if orderly_close(session) or greeting(session) is not None:
            return None  # the FIN ended it; a RST after it is the other stack's tidy-up
        summary = (f"The server closed the connection (FIN, {where(session, first)}) "
                   f"{_stage(session, first)}, without a greeting; the {who(r.direction)} "
                   f"then sent RST ({where(session, r)}).") if first.direction == "S" else (
            f"The client closed (FIN, {where(session, first)}) {_stage(session, first)}; the "
            f"{who(r.direction)} then sent RST ({where(session, r)}).")
        evidence = [ev(first), ev(r)]
    else:
        summary = (f"The {who(r.direction)} reset the connection (RST, {where(session, r)}) "
                   f"{_stage(session, r)}.")
        evidence = [ev(r, f"RST from the {who(r.direction)}")]
    return Finding(
        code="tcp-reset",
        summary=summary,
        evidence=evidence,
        cannot_prove=f"why the {who(r.direction)} reset: a crash, a policy (too many "
        "connections, a blacklist), or a firewall/IPS injecting the RST on its behalf",
        next_step=f"check the {who(r.direction)}'s log at this time; capture on the "
        f"{who(r.direction)} side too to see whether it really sent the RST",
        verdict=True,
        severity="error",
    )


@rule
def pmtu_blackhole(session: Session) -> Finding | None:
    """``pmtu-blackhole``: full-size segments sent again and again, never answered.

    Seen from the sender: the same large segment retransmitted (no ACK came),
    while the small segments before it got replies.  The other side went
    silent after it; the session then timed out or was reset.
    """
    groups: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in session.of_kind("tcp-retransmission"):
        if int(e.fields.get("length") or 0) >= FULL_SIZE:
            groups[(e.direction, int(e.fields.get("offset") or 0))].append(e)
    for (d, _off), rts in groups.items():
        if len(rts) < 2:
            continue
        t0 = rts[0]
        peer = "S" if d == "C" else "C"
        answered_after = [e for e in data_events(session, peer)
                          if (e.time, e.frame) > (t0.time, t0.frame)]
        if answered_after:
            continue
        earlier = [e for e in data_events(session, peer)
                   if (e.time, e.frame) < (t0.time, t0.frame)]
        length = int(t0.fields.get("length") or 0)
        orig = t0.fields.get("original_frame")
        span = rts[-1].time - t0.time
        evidence = [ev(x, f"retransmission of {length} bytes") for x in rts[:5]]
        if earlier:
            evidence.insert(0, ev(earlier[-1], "small segments before got through: "
                                               + earlier[-1].text))
        c = closes(session)
        end = (f" The {who(c[0].direction)} then closed ({where(session, c[0])})."
               if c else "")
        return Finding(
            code="pmtu-blackhole",
            summary=f"The {who(d)} sent a {length}-byte segment"
            f"{f' (first in frame {orig})' if orig else ''} and retransmitted it {len(rts)} "
            f"times over {fmt_s(span)} without an answer, while smaller segments before it "
            f"were answered: a path MTU black hole (large packets dropped, the ICMP "
            f"'fragmentation needed' lost or filtered).{end}",
            evidence=evidence,
            cannot_prove="where on the path the large packets die, and whether ICMP was sent: "
            "a capture at one point cannot see it",
            next_step="test with `ping -M do -s 1472 <peer>` (IPv4) from both ends; allow ICMP "
            "type 3 code 4 (ICMPv6 type 2); or clamp the MSS on the tunnel/VPN "
            "(`iptables ... -j TCPMSS --clamp-mss-to-pmtu`)",
            verdict=True,
            severity="error",
        )
    return None


@rule
def no_greeting(session: Session) -> Finding | None:
    """``timeout`` before the greeting: connected, and the server never said 220.

    The plaintext timeout rule needs a last word; here there is none, only
    the handshake, so the silence runs from the SYN-ACK to the client's close.
    """
    sa = flags(session, "tcp-syn-ack")
    c = first_close(session)
    if not sa or c is None or c.direction != "C" or session.implicit_tls:
        return None
    if any(not e.kind.startswith("tcp-") and e.kind != "note" for e in session.events
           if (e.time, e.frame) < (c.time, c.frame)):
        return None
    wait = c.time - sa[0].time
    if wait < TIMEOUT_MIN_SECONDS:
        return None
    return Finding(
        code="timeout",
        summary=f"The TCP handshake completed ({where(session, sa[0])}) but the server sent "
        f"no greeting; the client waited {fmt_s(wait)} and closed ({where(session, c)}).",
        evidence=[ev(sa[0]), ev(c)],
        cannot_prove="whether the server was overloaded, stalled in a DNS lookup of the "
        "client, or deliberately slow (tarpitting, postscreen greet pause)",
        next_step="check the server's log for this connection; time a manual "
        f"`nc {session.server[0]} {session.server[1]}` banner from the same client",
        verdict=True,
        severity="error",
    )
