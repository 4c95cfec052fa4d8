"""The Markdown report: for tickets and GitHub issues.

GitHub-flavoured Markdown (pipe tables, fenced code).  The prose and the tables are
escaped so that what the wire carried -- ``<user@host>``, ``|``, ``*`` in a banner --
is shown as it was and never turns into links, HTML or broken table cells; the
per-session timeline is the text report's, in a fenced block, because a timeline is
read in a fixed-width font and pasted on as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pcapsmtp import __version__
from pcapsmtp.analyze import Analysis
from pcapsmtp.render.common import (
    capture_span,
    client_fingerprints,
    embedded_keys,
    ending_text,
    linktype_name,
    utc,
    verdict_tally,
)
from pcapsmtp.render.common import verdict_code as _code
from pcapsmtp.render.text import timeline_rows
from pcapsmtp.timeline import Session, endpoint

# Characters with a meaning in Markdown (or in HTML, which Markdown passes through).
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#~!&])")
_CODE_SPAN = re.compile(r"`([^`]+)`")
EVIDENCE_SHOWN = 8


def render(result: Analysis, timelines: bool = True, sharing: Any = None) -> str:
    """The whole report; ``sharing`` (a redact.Sharing) adds its scope and redaction lines."""
    return "\n".join(lines(result, timelines, sharing)) + "\n"


def lines(result: Analysis, timelines: bool = True, sharing: Any = None) -> Iterator[str]:
    yield "# pcapsmtp report"
    yield ""
    yield from header(result)
    if sharing is not None and sharing.shown:
        yield f"- **report cut down:** {text(sharing.shown)}"
    yield ""
    yield "## Summary"
    yield ""
    yield from summary(result.sessions)
    for finding in result.findings:
        yield ""
        yield f"**Across sessions:** {prose(finding.summary)}"
        if finding.next_step:
            yield ""
            yield f"Next: {prose(finding.next_step)}"
    for session in result.sessions:
        yield ""
        yield from session_block(session, timelines)
    redacted = sharing.redaction_line() if sharing is not None else None
    if redacted:
        yield ""
        yield "## Redacted"
        yield ""
        yield f"{text(redacted)}, replaced by pseudonyms (the same original, the same pseudonym)."


def header(result: Analysis) -> Iterator[str]:
    """The capture's facts as a list: what anyone reading the ticket asks first."""
    info = result.capture
    yield f"- **tool:** pcapsmtp {text(__version__)} ({text(result.engine)} engine)"
    yield f"- **file:** {code(info.file)} ({info.packets:,} packets)"
    span = capture_span(result)
    if span:
        yield f"- **time:** {span}"
    links = ", ".join(linktype_name(t) for t in info.linktypes) or "none"
    snap = f"snaplen {info.snaplen}" if info.snaplen else "snaplen unknown"
    gz = ", gzip" if info.compressed else ""
    yield f"- **format:** {text(info.format + gz)}, link type {text(links)}, {snap}"
    keys = embedded_keys(result)
    if keys:
        yield f"- **keys:** {text(keys)}"
    if info.problem:
        yield f"- **warning:** {text(info.problem)}; sessions below are what came before it."


def summary(sessions: list[Session]) -> Iterator[str]:
    if not sessions:
        yield "No SMTP sessions in this report."
        return
    yield f"{len(sessions)} session(s): {text(verdict_tally(sessions))}"
    yield ""
    headers = ["#", "client", "server", "start UTC", "secs", "pkts", "ended", "verdict"]
    rows = [[f"[{s.id}](#session-{s.id})", cell(endpoint(s.client)), cell(endpoint(s.server)),
             utc(s.first_time, date=False), f"{s.last_time - s.first_time:.3f}",
             str(s.packets), cell(ending_text(s)), f"`{_code(s)}`"] for s in sessions]
    yield from table(headers, rows, right=(0, 4, 5))


def table(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> Iterator[str]:
    """A GFM pipe table; cells must already be escaped (see :func:`cell`)."""
    yield "| " + " | ".join(headers) + " |"
    yield "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"
    for row in rows:
        yield "| " + " | ".join(row) + " |"


def session_block(session: Session, timeline: bool = True) -> Iterator[str]:
    yield (f'<a id="session-{session.id}"></a>')
    yield (f"## Session {session.id}: {code(endpoint(session.client))} → "
           f"{code(endpoint(session.server))} — `{_code(session)}`")
    yield ""
    prints = client_fingerprints(session)
    if prints:
        yield f"client TLS: {code(prints)}"
        yield ""
    verdict = session.verdict
    if verdict is not None:
        yield prose(verdict.summary)
        evidence = getattr(verdict, "evidence", [])[:EVIDENCE_SHOWN]
        if evidence:
            yield ""
        for ev in evidence:
            rel = (ev.time - session.first_time) if ev.time is not None else 0.0
            yield f"- frame {ev.frame} (+{rel:.3f} s): {prose(ev.what)}"
        if getattr(verdict, "cannot_prove", None):
            yield ""
            yield f"**Cannot tell:** {prose(verdict.cannot_prove)}"
        if getattr(verdict, "next_step", None):
            yield ""
            yield f"**Next:** {prose(verdict.next_step)}"
    if session.notes:
        yield ""
        for note in session.notes:
            yield f"- note `{note.code}`: {prose(note.summary)}"
    if timeline:
        yield ""
        yield from fenced(list(timeline_rows(session)))


def fenced(body: list[str], lang: str = "text") -> Iterator[str]:
    """A fenced code block whose fence no line of ``body`` can close."""
    longest = max((len(m) for line in body for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    yield fence + lang
    yield from body
    yield fence


def text(value: str) -> str:
    """Plain text shown as is: every Markdown-significant character escaped."""
    return _SPECIAL.sub(r"\\\1", value).replace("\n", " ")


def cell(value: str) -> str:
    """A table cell: escaped text (``|`` included, so it cannot split the cell)."""
    return text(value)


def code(value: str) -> str:
    """An inline code span that holds any text (backticks in it get a longer fence)."""
    value = value.replace("\n", " ")
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def prose(value: str) -> str:
    """A rule's sentence: its `quoted` parts stay code spans, the rest is escaped text."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(value):
        out.append(text(value[pos:m.start()]))
        out.append(code(m.group(1)))
        pos = m.end()
    out.append(text(value[pos:]))
    return "".join(out)
