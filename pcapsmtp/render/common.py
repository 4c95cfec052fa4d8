"""What every renderer shares: names, times, the session's ending."""

from __future__ import annotations

import time as _time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pcapsmtp.store import clock_stepped, verdicts
from pcapsmtp.timeline import Session

if TYPE_CHECKING:
    from pcapsmtp.analyze import Analysis

LINKTYPE_NAMES = {
    0: "NULL", 1: "EN10MB", 12: "RAW", 14: "RAW", 101: "RAW", 108: "LOOP",
    113: "LINUX_SLL", 228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2",
}


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"LINKTYPE_{linktype}")


def utc(ts: float | None, date: bool = True) -> str:
    """'2026-11-23 20:41:03.123' (UTC): reports are read across time zones."""
    if ts is None:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S"
    return _time.strftime(fmt, _time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}"


def capture_span(result: Analysis) -> str:
    """'first to last UTC (N s)'; with a clock step, no span: it would count the step."""
    info = result.capture
    if info.first is None or info.last is None:
        return ""
    span = f"{utc(info.first)} to {utc(info.last)} UTC"
    stepped = clock_stepped(result.sessions)
    if not stepped:
        return f"{span} ({info.last - info.first:.3f} s)"
    ids = ", ".join(str(i) for i in stepped[:5]) + (", ..." if len(stepped) > 5 else "")
    return (f"{span}; the clock jumps within the capture (session{'s' * (len(stepped) > 1)} "
            f"{ids}), so no span is given")


def embedded_keys(result: Analysis) -> str | None:
    """What the report says of TLS keys the capture carries (pcapng decryption secrets):
    the native engine cannot use them, tshark decrypts with them."""
    n = result.capture.tls_keys
    if not n:
        return None
    what = f"{n:,} TLS key-log line{'s' if n > 1 else ''} embedded in the capture"
    if result.engine == "native":
        return f"{what}: `--engine tshark` decrypts the sessions with them"
    return f"{what}, used to decrypt"


def mark(direction: str, tls: bool) -> str:
    """Direction marks as swaks prints them: -> <- in plaintext, ~> <~ inside TLS."""
    if direction == "C":
        return "~>" if tls else "->"
    if direction == "S":
        return "<~" if tls else "<-"
    return "**"


def ending(session: Session) -> dict[str, object]:
    """How the session ended, read off the timeline: who closed, how, last words."""
    closer = how = None
    for e in session.events:
        if e.kind in ("tcp-fin", "tcp-rst"):
            closer = "client" if e.direction == "C" else "server"
            how = "FIN" if e.kind == "tcp-fin" else "RST"
            break
    last_cmd = last_reply = None
    for e in reversed(session.events):
        if last_cmd is None and e.kind == "smtp-command":
            last_cmd = e.text
        if last_reply is None and e.kind == "smtp-reply":
            last_reply = e.text
        if last_cmd and last_reply:
            break
    if closer is None:
        how = "still open at the end of the capture" if session.open_at_end else "no close seen"
    return {"closed_by": closer, "how": how, "last_command": last_cmd, "last_reply": last_reply}


def ending_text(session: Session) -> str:
    e = ending(session)
    if e["closed_by"]:
        return f"{e['closed_by']} {e['how']}"
    return "open at end" if session.open_at_end else "no close"


def verdict_code(session: Session) -> str:
    return getattr(session.verdict, "code", None) or "-"


def verdict_tally(sessions: Sequence[Session]) -> str:
    """'ok 3, smtp-rejected 1', most frequent first; counted on the in-memory stubs, so a
    spooled report does not load every session just to count."""
    counts = Counter(code for _, code in verdicts(sessions))
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items(), key=lambda x: -x[1]))


def around_id(text: str, prefix: str, sid: int) -> tuple[str, str]:
    """``text`` (which begins with ``prefix`` and the session id) split around the id, for
    a store that renders sessions before their final ids are known (store.SessionStore)."""
    head = f"{prefix}{sid}"
    if not text.startswith(head):
        raise ValueError(f"session rendering does not begin with its id: {text[:40]!r}")
    return prefix, text[len(head):]


def client_fingerprints(session: Session) -> str | None:
    """'JA3 c12b… JA4 t13i…' of the client's first ClientHello, or None without one: shown
    in each session's header, where a reader compares clients (the sessions that fail
    against those that work often differ by their TLS library, which these name)."""
    for e in session.events:
        if e.kind == "tls-client-hello" and e.direction == "C" and e.fields:
            ja3, ja4 = e.fields.get("ja3"), e.fields.get("ja4")
            if ja3 or ja4:
                return "  ".join(f"{name} {value}" for name, value in
                                 (("JA3", ja3), ("JA4", ja4)) if value)
    return None
