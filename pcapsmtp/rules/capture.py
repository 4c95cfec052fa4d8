"""What the capture itself lacks: cut packets, missing bytes, a missed start or end.

One finding lists every reason, so a reader sees them together.  It is the
verdict only when no rule can say more (``capture-incomplete`` ranks last);
otherwise it rides along as a note, because it limits what the verdict can
prove.
"""

from __future__ import annotations

from pcapsmtp.rules import Evidence, Finding, rule
from pcapsmtp.rules._common import FROM_PATH, NOT_DATA, ev, f, fmt_s, gaps, where, who
from pcapsmtp.timeline import Session


@rule
def incomplete(session: Session) -> Finding | None:
    reasons: list[str] = []
    evidence: list[Evidence] = []
    steps: list[str] = []
    all_gaps = gaps(session)
    snap = [g for g in all_gaps if f(g, "reason") == "snaplen"]
    other = [g for g in all_gaps if f(g, "reason") != "snaplen"]
    if snap:
        n = sum(int(f(g, "length", default=0)) for g in snap)
        reasons.append(f"packets were cut by the capture's snaplen ({len(snap)} cut(s), "
                       f"{n} bytes not saved; first at {where(session, snap[0])})")
        evidence.append(ev(snap[0], "packet truncated by snaplen"))
        steps.append("capture with `tcpdump -s 0` (whole packets)")
    if other:
        by_dir: dict[str, int] = {}
        for g in other:
            by_dir[g.direction] = by_dir.get(g.direction, 0) + int(f(g, "length", default=0))
        txt = ", ".join(f"{n} {who(d)} bytes" for d, n in sorted(by_dir.items()))
        unacked = [g for g in other if f(g, "reason") in ("sent-unseen", "end-of-capture")]
        also = ("; the receiver's ACKs never covered them either, so they may have been lost "
                "before this capture point, not by it" if len(unacked) == len(other) else "")
        reasons.append(f"bytes are missing from the capture ({txt}; first gap at "
                       f"{where(session, other[0])}{also})")
        evidence.append(ev(other[0], "bytes missing"))
        if not also:
            steps.append("capture on the host itself or with a larger buffer "
                         "(`tcpdump -B 8192`); check for drops reported by tcpdump")
        else:
            steps.append("capture at the sender too, to see whether the bytes left it")
    if not session.syn_seen:
        reasons.append("the session started before the capture (no SYN)")
        evidence.append(Evidence(session.first_frame, session.first_time,
                                 "first packet of the session, not a SYN"))
        steps.append("start the capture before the connection opens")
    if session.open_at_end:
        reasons.append(f"it was still open when the capture ended (last packet "
                       f"frame {session.last_frame})")
        evidence.append(Evidence(session.last_frame, session.last_time,
                                 "last packet; no FIN/RST after it"))
        steps.append("capture longer, until the connection closes")
    # One pass for what data_events(session, "C"/"S")[0] and "any packet of each side"
    # would be (three passes before): incomplete 9.5 -> ~5 us a session.
    c_first = s_first = None  # each side's first event carrying application bytes
    c_any = s_any = False
    for e in session.events:
        d = e.direction
        if e.kind in FROM_PATH:
            continue  # a router's ICMP is no packet of either side
        if d == "C":
            c_any = True
        elif d == "S":
            s_any = True
        else:
            continue
        if not e.kind.startswith(NOT_DATA) and e.kind != "note":
            if d == "C":
                if c_first is None:
                    c_first = e
            elif s_first is None:
                s_first = e
        if c_any and s_any and c_first is not None and s_first is not None:
            break
    if c_first is not None and not s_any:
        reasons.append("only the client's packets were captured (the client sent data, so "
                       "the server must have answered)")
        evidence.append(ev(c_first, "client data with no server packet in the capture"))
        steps.append("capture where both directions pass (asymmetric routing?), or check the "
                     "capture filter")
    elif s_first is not None and not c_any:
        reasons.append("only the server's packets were captured")
        evidence.append(ev(s_first, "server data with no client packet in the capture"))
        steps.append("capture where both directions pass, or check the capture filter")
    if not reasons:
        return None
    span = session.last_time - session.first_time
    return Finding(
        code="capture-incomplete",
        summary=f"The capture does not hold the whole session ({fmt_s(span)} seen): "
        + "; ".join(reasons) + ".",
        evidence=evidence,
        cannot_prove="anything that would be in the missing part: replies, closes or errors "
        "there are invisible",
        next_step="; ".join(dict.fromkeys(steps)),
        verdict=True,
        severity="warning",
    )
