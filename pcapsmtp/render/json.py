"""The JSON report: the stable contract for scripts (schema ``pcapsmtp/1``).

The fields docs/json.md marks stable (the JSON contract) are never renamed or
removed without bumping the schema; anything else may be added.  docs/json.md
describes every field.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

from pcapsmtp import __version__
from pcapsmtp.analyze import Analysis
from pcapsmtp.jsonable import plain
from pcapsmtp.render.common import around_id, ending, linktype_name
from pcapsmtp.store import clock_stepped, parallel_map, rendered, verdicts
from pcapsmtp.timeline import Event, Session, endpoint

SCHEMA = "pcapsmtp/1"


def render(result: Analysis, sharing: Any = None) -> str:
    """``sharing`` (a redact.Sharing) adds "shown" (the cut) and "redacted" (counts)."""
    return "".join(chunks(result, sharing))


def chunks(result: Analysis, sharing: Any = None) -> Iterator[str]:
    """The document in pieces, one session at a time, so it is never held whole.

    Compact on purpose: with indent, json falls back to its pure-Python encoder, which
    took half the run time on a large capture.  Pipe through `jq .` to read it.
    """
    data = to_dict(result, sessions=False)
    if sharing is not None and (sharing.shown is not None or sharing.redacted is not None):
        data["shown"] = sharing.shown
        data["redacted"] = sharing.redacted
    head = _dump(data)
    yield head[:-1] + ',"sessions":['
    texts = rendered(result.sessions, ON_ADD[0])
    if texts is None:
        texts = parallel_map(result.sessions, _session_json)
    for i, text in enumerate(texts):
        yield ("," if i else "") + text
    yield "]}\n"


def _session_json(s: Session) -> str:
    return _dump(session_dict(s))


def session_parts(s: Session) -> tuple[str, str]:
    """The session's JSON split around its id (the first key): see store.SessionStore (render)."""
    return around_id(_session_json(s), '{"id":', s.id)


#: analyze(..., render=ON_ADD): sessions rendered as they are finished (cli.py).
ON_ADD = ("json", session_parts)


def _dump(value: Any) -> str:
    """orjson: the stdlib's C encoder took 91 us of a benchmark session (12 % of a run),
    orjson 14 us, for the same document (it writes 9.9e-05 as 0.000099, the same number).
    What orjson refuses (an integer over 64 bits) takes the stdlib's path."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        # check_circular=False: the value is a tree just built from plain data (to_dict,
        # session_dict), never a cycle
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          check_circular=False)


def to_dict(result: Analysis, sessions: bool = True) -> dict[str, Any]:
    info = result.capture
    return {
        "schema": SCHEMA,
        "tool": {"name": "pcapsmtp", "version": __version__, "engine": result.engine},
        "capture": {
            "file": info.file, "format": info.format, "compressed": info.compressed,
            "packets": info.packets, "first": info.first, "last": info.last,
            "linktypes": [linktype_name(t) for t in info.linktypes],
            "snaplen": info.snaplen, "problem": info.problem,
            "tls_keys_embedded": info.tls_keys,
            "found_by_greeting": result.selection.by_greeting_fallback,
            "clock_stepped_in_sessions": clock_stepped(result.sessions),
        },
        "decode": _decode(result),
        "summary": {
            "sessions": len(result.sessions),
            "verdicts": dict(Counter(code for _, code in verdicts(result.sessions)
                                     if code != "-")),
        },
        "findings": [_finding(f) for f in result.findings],
        **({"sessions": [session_dict(s) for s in result.sessions]} if sessions else {}),
    }


def _decode(result: Analysis) -> dict[str, Any]:
    st = result.decode
    return {"frames": st.frames, "tcp": st.tcp, "non_tcp": st.non_tcp,
            "unknown_linktypes": {linktype_name(k): v for k, v in st.unknown_linktypes.items()},
            "fragments": st.fragments, "reassembled": st.reassembled,
            "fragments_incomplete": st.fragments_incomplete, "malformed": st.malformed}


def session_dict(s: Session) -> dict[str, Any]:
    return {
        "id": s.id,
        "client": endpoint(s.client),
        "server": endpoint(s.server),
        "ip_version": s.ip_version,
        "first": s.first_time, "last": s.last_time,
        "duration": round(s.last_time - s.first_time, 6),
        "first_frame": s.first_frame, "last_frame": s.last_frame,
        "packets": s.packets,
        "syn_seen": s.syn_seen, "implicit_tls": s.implicit_tls, "open_at_end": s.open_at_end,
        "clock_steps": [{"frame": fr, "seconds": round(sec, 6)} for fr, sec in s.clock_steps],
        "verdict": _finding(s.verdict) if s.verdict is not None else None,
        "notes": [_finding(n) for n in s.notes],
        "ending": ending(s),
        "tcp": _stats(s.stats),
        "tls": plain(s.tls),
        "events_dropped": s.events_dropped,
        "events": [event_dict(e, s.first_time) for e in s.events],
    }


def event_dict(e: Event, start: float) -> dict[str, Any]:
    return {"time": e.time, "rel": round(e.time - start, 6), "frame": e.frame,
            "first_frame": e.first_frame, "dir": e.direction, "tls": e.tls,
            "kind": e.kind, "text": e.text, "fields": e.fields}


def _finding(f: Any) -> dict[str, Any]:
    if hasattr(f, "to_dict"):
        return f.to_dict()
    return plain(f)


def _stats(stats: Any) -> Any:
    if stats is None:
        return None
    return {"client": plain(stats.C), "server": plain(stats.S)}
