"""TCP-level outcomes: never answered, refused, reset, and the PMTU black hole."""

from __future__ import annotations

import re
from collections import defaultdict

from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    FROM_PATH,
    NOT_DATA,
    TIMEOUT_MIN_SECONDS,
    closes,
    data_events,
    ev,
    first_close,
    flag_name,
    flags,
    fmt_s,
    gaps,
    greeting,
    log_time,
    orderly_close,
    quit_answered,
    shared,
    short,
    where,
    who,
)
from pcapsmtp.timeline import Event, Session

#: Segments at least this long count as "full-size" for the PMTU test.
FULL_SIZE = 1000


def _established(session: Session) -> bool:
    return bool(flags(session, "tcp-syn-ack")) or bool(data_events(session, "S"))


@rule
@needs("tcp-syn")
def no_answer(session: Session) -> Finding | None:
    """``tcp-no-answer``: SYNs and nothing back -- no SYN-ACK, no RST, no data.

    Not when the client sent data: then the server did answer and the capture
    missed that direction (``capture.py`` says so).
    """
    syns = flags(session, "tcp-syn", "C")
    if not syns or _established(session) or data_events(session, "C"):
        return None
    if any(e.direction == "S" and e.kind not in FROM_PATH for e in session.events):
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
@needs("tcp-rst")
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
             and not e.kind.startswith(NOT_DATA) and e.kind != "note"]
    if not words:
        return "before any SMTP was exchanged"
    last = words[-1]
    if last.kind.startswith("tls-") or last.tls:
        return f"inside TLS, after {last.text} ({where(session, last)})"
    return f"after {who(last.direction)}'s {last.text!r} ({where(session, last)})"


@rule
@needs("tcp-rst")
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
    if closed_tls_first(session) is not None:
        return None  # a TLS teardown detail: ``reset_after_close_notify`` notes it
    if first.kind == "tcp-fin":
        if orderly_close(session) or greeting(session) is not None or _tls_spoke(session):
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
        next_step=f"check the {who(r.direction)}'s log at {log_time(r.time)}; capture on the "
        f"{who(r.direction)} side too to see whether it really sent the RST",
        verdict=True,
        severity="error",
    )


@shared
def closed_tls_first(session: Session) -> Event | None:
    """The close_notify (or other alert after the handshake) that preceded the RST which
    closed the connection first, when the TLS dialogue had run both ways: the session was
    already over when the RST came.  Asked by :func:`reset` and its note: answered once.

    The usual cause is ordinary: the side that sent close_notify closed its socket while
    bytes it had not read (the peer's own close_notify, or a last record) sat in its
    receive buffer, and the kernel answers that close with RST instead of FIN (RFC 1122
    4.2.2.13). OpenSSL-based servers do it to clients that send close_notify at once.
    """
    r = first_close(session)
    if r is None or r.kind != "tcp-rst" or not _tls_spoke(session):
        return None
    done = session.of_kind("tls-encrypted-handshake")
    done_t = (done[-1].time, done[-1].frame) if done else None
    for a in session.of_kind("tls-alert"):
        if done_t is not None and (a.time, a.frame) <= done_t:
            continue
        if (a.time, a.frame) <= (r.time, r.frame):
            return a
    return None


@rule
@needs("tcp-rst")
def reset_after_close_notify(session: Session) -> Finding | None:
    """A note for the RST that ends a finished TLS session (see :func:`closed_tls_first`)."""
    a = closed_tls_first(session)
    if a is None:
        return None
    r = flags(session, "tcp-rst")[0]
    by = "its own" if a.direction == r.direction else f"the {who(a.direction)}'s"
    return Finding(
        code="reset-after-close-notify",
        summary=f"The {who(r.direction)} ended the connection with RST ({where(session, r)}) "
        f"after {by} TLS close alert ({where(session, a)}), with no FIN: a teardown "
        "detail, not a failure. A side that closes its socket with unread bytes in it "
        "(typically the peer's close_notify) makes the kernel send RST instead of FIN.",
        evidence=[ev(a, "TLS close alert"), ev(r, f"RST from the {who(r.direction)}")],
        cannot_prove="what the unread bytes were (they are encrypted)",
        severity="info",
    )


def _tls_spoke(session: Session) -> bool:
    """Handshake done and records went both ways: inside TLS the 221 cannot be seen, so a
    FIN after that is as orderly as the capture can show (swaks, for one, then RSTs when
    the server's close_notify arrives after it closed)."""
    tls = session.tls
    if tls is None or not getattr(tls, "handshake_complete", False):
        return False
    return all(getattr(side, "app_records", 0) > 0 for side in (tls.client, tls.server))


_TIMEOUT_TEXT = re.compile(r"time[d]?[ -]?out", re.I)
#: Usual full-size payloads (MSS 1460/1440 IPv4/IPv6, less 12 bytes of TCP timestamps).
USUAL_MSS = (1448, 1460, 1428, 1440)
#: PMTU gaps never filled: reasons that mean the receiver's ACKs never covered the hole.
_UNFILLED = ("end-of-capture", "out-of-order-flush")


def _gives_up(e: Event) -> bool:
    """A reply that ends the dialogue without proving receipt: 421 / '... timeout'."""
    if e.kind != "smtp-reply":
        return False
    code = e.fields.get("code")
    text = " ".join(str(x) for x in e.fields.get("lines") or []) or e.text
    return code == 421 or (isinstance(code, int) and code >= 400
                           and bool(_TIMEOUT_TEXT.search(text)))


def _peer_gave_up(session: Session, peer: str, after: Event) -> str:
    """' The server said `421 ...` (frame 26, ...) and closed (FIN, frame 27, ...).'"""
    parts = []
    said = next((e for e in data_events(session, peer)
                 if (e.time, e.frame) > (after.time, after.frame) and _gives_up(e)), None)
    if said is not None:
        parts.append(f"said `{said.text}` ({where(session, said)})")
    c = next((x for x in closes(session) if x.direction == peer
              and (x.time, x.frame) > (after.time, after.frame)), None)
    if c is not None:
        parts.append(f"closed ({flag_name(c)}, {where(session, c)})")
    return f" The {who(peer)} {' and '.join(parts)}." if parts else ""


def _segments(length: int) -> str:
    for mss in USUAL_MSS:
        if length % mss == 0 and length // mss >= 2:
            return f" ({length // mss} full-size segments of {mss} bytes)"
    return ""


def _where_in_dialogue(session: Session, direction: str, offset: int) -> str:
    for e in session.events:
        start, end = e.fields.get("start"), e.fields.get("end")
        if (e.direction == direction and e.kind != "tcp-gap" and isinstance(start, int)
                and isinstance(end, int) and start <= offset < end):
            return {"smtp-body": " in the message body"}.get(e.kind, f" in {e.text!r}")
    return ""


_PMTU_STEP = ("test with `ping -M do -s 1472 <peer>` (IPv4) from both ends; allow ICMP "
              "type 3 code 4 (ICMPv6 type 2); or clamp the MSS on the tunnel/VPN "
              "(`iptables ... -j TCPMSS --clamp-mss-to-pmtu`)")
_PMTU_WHY = ("a path MTU black hole (large packets dropped, the ICMP 'fragmentation needed' "
             "lost or filtered)")


#: Bytes of IP and TCP header (without options) around a payload, by IP version: a segment
#: of ``length`` payload bytes is at least ``length + _HEADERS[version]`` bytes on the wire.
_HEADERS = {4: 40, 6: 60}


def _ignored_icmp(session: Session, sender: str, rts: list[Event]) -> Event | None:
    """The first ICMP too-big addressed to ``sender`` (its event points toward it) that
    reached the capture point before one of the sender's retransmissions that the MTU it
    reports cannot carry: as far as the capture can tell, the sender was told and went on
    regardless.  An MTU of 0 (an old router that names none) only says "smaller"."""
    toward = "S" if sender == "C" else "C"
    for m in session.of_kind("icmp-too-big"):
        if m.direction != toward:
            continue
        mtu = int(m.fields.get("mtu") or 0)
        head = _HEADERS.get(m.fields.get("ip_version"), 40)
        if any((m.time, m.frame) < (r.time, r.frame)
               and (not mtu or int(r.fields.get("length") or 0) + head > mtu) for r in rts):
            return m
    return None


def _icmp_name(m: Event) -> str:
    """'ICMP fragmentation needed (next-hop MTU 1280)', 'ICMPv6 Packet Too Big (MTU 1280)'."""
    mtu = int(m.fields.get("mtu") or 0)
    if m.fields.get("ip_version") == 6:
        return f"ICMPv6 Packet Too Big (MTU {mtu})"
    return "ICMP fragmentation needed (" + (f"next-hop MTU {mtu})" if mtu
                                            else "no next-hop MTU given)")


def _sender_words(session: Session, d: str, peer: str,
                  icmp: Event | None) -> tuple[str, str, str]:
    """(why, cannot_prove, next_step) of a black hole seen at the sender: the ICMP lost on
    the path when the capture holds none; else the sender's own fault, with the advice
    for its admin."""
    if icmp is None:
        return (f"{_PMTU_WHY}.",
                "where on the path the large packets die, and whether ICMP was sent: a "
                "capture at one point cannot see it (nor one filtered by port, such as "
                "`tcpdump port 25`, which drops ICMP)",
                _PMTU_STEP + f"; a capture on the {who(peer)} side shows the hole; capture "
                "with `port 25 or icmp or icmp6` to see whether a 'fragmentation needed' "
                "reaches this host")
    host = session.client[0] if d == "C" else session.server[0]
    why = (f"{_icmp_name(icmp)} from {icmp.fields.get('router')} reached the capture point "
           f"({where(session, icmp)}), yet the {who(d)} kept retransmitting full-size "
           f"segments after it: the {who(d)} dropped or ignored it (a firewall dropping "
           "ICMP, or path MTU discovery off).")
    cannot = (f"whether the ICMP got past the {who(d)}'s own firewall: tcpdump on a host "
              "sees packets before its firewall does, so a firewall dropping ICMP and path "
              "MTU discovery turned off look alike; a capture elsewhere on the path cannot "
              f"rule out a loss between it and the {who(d)}")
    step = (f"on the {who(d)} ({host}): allow ICMP type 3 code 4 (ICMPv6 type 2) in its "
            "firewall (`nft list ruleset`, `iptables -S`); check that path MTU discovery is "
            "on (`sysctl net.ipv4.ip_no_pmtu_disc` should be 0); or clamp the MSS to the "
            "path MTU (`iptables ... -j TCPMSS --clamp-mss-to-pmtu`)")
    return why, cannot, step


# Linux's minimum retransmission timeout is 200 ms: "retransmissions" closer together than
# this are duplicated or edited packets, not a sender waiting for an acknowledgement.
MIN_RETRY_SPAN = 0.2


def _pmtu_from_sender(session: Session) -> Finding | None:
    """Seen at the sender: full-size segments retransmitted, never acknowledged.

    Either one full-size segment retransmitted at least twice, or several
    different full-size segments retransmitted.  A peer packet counts as an
    acknowledgement unless the sender still retransmitted after it, or it is
    the peer giving up (421 / timeout reply, close).  An ICMP too-big addressed to
    the sender before such retransmissions moves the blame from the path to the
    sender (see ``_ignored_icmp``).
    """
    by_dir: dict[str, dict[int, list[Event]]] = defaultdict(lambda: defaultdict(list))
    for e in session.of_kind("tcp-retransmission"):
        if int(e.fields.get("length") or 0) >= FULL_SIZE:
            by_dir[e.direction][int(e.fields.get("offset") or 0)].append(e)
    for d, groups in by_dir.items():
        repeated = [g for g in groups.values() if len(g) >= 2]
        if not repeated and len(groups) < 2:
            continue
        rts = sorted((x for g in groups.values() for x in g), key=lambda x: (x.time, x.frame))
        t0, last = rts[0], rts[-1]
        if last.time - t0.time < MIN_RETRY_SPAN:
            continue  # no retransmission timer fires that fast: duplicates, not retries
        peer = "S" if d == "C" else "C"
        answers = [e for e in data_events(session, peer)
                   if (t0.time, t0.frame) < (e.time, e.frame)
                   and (e.time, e.frame) > (last.time, last.frame) and not _gives_up(e)]
        if answers:
            continue
        ended = any((x.time, x.frame) > (t0.time, t0.frame) for x in closes(session)) or any(
            _gives_up(e) and (e.time, e.frame) > (t0.time, t0.frame)
            for e in data_events(session, peer))
        if not repeated and not ended:
            continue  # a few segments resent once each, and the capture stops: plain loss
        earlier = [e for e in data_events(session, peer)
                   if (e.time, e.frame) < (t0.time, t0.frame)]
        head = (repeated or list(groups.values()))[0]
        length = int(head[0].fields.get("length") or 0)
        orig = head[0].fields.get("original_frame")
        if len(groups) == 1:
            what = (f"a {length}-byte segment{f' (first in frame {orig})' if orig else ''} "
                    f"and retransmitted it {len(head)} times")
        else:
            what = (f"{len(groups)} different full-size segments (the first {length} bytes"
                    f"{f', frame {orig}' if orig else ''}) and retransmitted them "
                    f"{len(rts)} times")
        evidence = [ev(x, f"retransmission of {int(x.fields.get('length') or 0)} bytes")
                    for x in rts[:4]]
        if len(rts) > 4:
            evidence.append(ev(last, f"retransmission of "
                                     f"{int(last.fields.get('length') or 0)} bytes (last)"))
        before = ""
        if earlier:
            evidence.insert(0, ev(earlier[-1], "small segments before got through: "
                                               + short(earlier[-1].text)))
            before = (f", while the smaller segments before were answered (last: "
                      f"{short(earlier[-1].text.splitlines()[0])!r}, "
                      f"{where(session, earlier[-1])})")
        icmp = _ignored_icmp(session, d, rts)
        if icmp is not None:
            evidence.append(ev(icmp, f"{_icmp_name(icmp)} from {icmp.fields.get('router')} "
                                     f"to the {who(d)}"))
            evidence.sort(key=lambda x: (x.time or 0.0, x.frame or 0))
        why, cannot, step = _sender_words(session, d, peer, icmp)
        return Finding(
            code="pmtu-blackhole",
            summary=f"The {who(d)} sent {what} over {fmt_s(last.time - t0.time)} "
            f"(last {where(session, last)}) without an acknowledgement{before}: "
            f"{why}{_peer_gave_up(session, peer, t0)}",
            evidence=evidence,
            cannot_prove=cannot,
            next_step=step,
            verdict=True,
            severity="error",
        )
    return None


def _pmtu_from_receiver(session: Session) -> Finding | None:
    """Seen at the receiver: a hole of full-size segments never filled, bytes after it
    arrived, and the receiver waited and gave up.

    A gap that stayed open to the end (or overflowed the reorder buffer) is one the
    receiver never acknowledged either -- had it, the gap would be ``acked-unseen``
    (capture loss) -- so the host, not only the capture, missed those bytes.  The
    later bytes arrived (the gap is not at a FIN), so the path worked for small
    segments.  The receiver then sent nothing but its timeout.
    """
    for g in gaps(session):
        length = int(g.fields.get("length") or 0)
        if g.fields.get("reason") not in _UNFILLED or length < 2 * FULL_SIZE:
            continue
        d, peer = g.direction, ("S" if g.direction == "C" else "C")
        if any(x.frame == g.frame for x in flags(session, "tcp-fin", d)):
            continue  # bytes missing before a FIN: nothing after the hole arrived
        after_peer = [e for e in session.events if e.direction == peer
                      and (e.time, e.frame) > (g.time, g.frame)
                      and e.kind not in ("tcp-retransmission", "tcp-gap", "note")
                      and e.kind not in ("tcp-syn", "tcp-syn-ack") and e.kind not in FROM_PATH]
        if not after_peer:
            continue
        first = after_peer[0]
        gave_up = _gives_up(first) or first.kind in ("tcp-fin", "tcp-rst", "tls-app-data",
                                                     "tls-alert")
        wait = first.time - g.time
        if not gave_up or wait < TIMEOUT_MIN_SECONDS:
            continue
        end = g.fields.get("offset")
        hole_end = int(end) + length if isinstance(end, int) else None
        ends = [e.fields.get("end") for e in session.events if e.direction == d
                and isinstance(e.fields.get("end"), int)]
        tail = (max(ends) - hole_end) if ends and hole_end is not None else 0
        got = f"the {tail} bytes after it" if tail > 0 else "a later segment"
        inside = _where_in_dialogue(session, d, int(end)) if isinstance(end, int) else ""
        return Finding(
            code="pmtu-blackhole",
            summary=f"A hole of {length:,} {who(d)} bytes{_segments(length)}{inside} never "
            f"arrived, while {got} did ({where(session, g)}); the {who(peer)}'s ACKs never "
            f"covered the hole, so it was lost on the path, not only by the capture. The "
            f"{who(peer)} waited {fmt_s(wait)} for it: large segments lost while a small one "
            f"passes: {_PMTU_WHY}.{_peer_gave_up(session, peer, g)}",
            evidence=[ev(g, f"{length} bytes never arrived; the {who(d)}'s later bytes did"),
                      ev(first, f"{who(peer)} gives up: {first.text}")],
            cannot_prove="where on the path the large packets die, and whether ICMP was sent; "
            f"that the {who(d)} retransmitted them (a capture on its side shows it)",
            next_step=_PMTU_STEP + f"; capture on the {who(d)} side too (its full-size "
            "segments should be retransmitted there)",
            verdict=True,
            severity="error",
        )
    return None


@rule
@needs("tcp-retransmission", "tcp-gap", "icmp-too-big")
def pmtu_blackhole(session: Session) -> Finding | None:
    """``pmtu-blackhole``: full-size segments lost again and again while small ones pass.

    From the sender's side: the same large segment retransmitted without an
    acknowledgement; when an ICMP too-big addressed to the sender is in the capture
    before those retransmissions, the sender ignored or dropped it.  From the
    receiver's side: a hole of full-size segments that is never filled while later,
    smaller bytes arrive, and the receiver times out.  The session then timed out or was reset.
    """
    return _pmtu_from_sender(session) or _pmtu_from_receiver(session)


@rule
@needs("tcp-syn-ack")
def no_greeting(session: Session) -> Finding | None:
    """``timeout`` before the greeting: connected, and the server never said 220.

    The plaintext timeout rule needs a last word; here there is none, only
    the handshake, so the silence runs from the SYN-ACK to the client's close.
    """
    sa = flags(session, "tcp-syn-ack")
    c = first_close(session)
    if not sa or c is None or c.direction != "C" or session.implicit_tls:
        return None
    wait = c.time - sa[0].time
    if wait < TIMEOUT_MIN_SECONDS:
        return None  # asked before the pass below, which every quick session would make
    if any(not e.kind.startswith(NOT_DATA) and e.kind != "note" for e in session.events
           if (e.time, e.frame) < (c.time, c.frame)):
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
