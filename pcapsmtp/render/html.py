"""The HTML report: one self-contained file with a ladder diagram per session.

One file that can be attached to a ticket or mailed: inline CSS, inline SVG, no
script, no font, no image, nothing fetched -- a Content-Security-Policy of
``default-src 'none'`` says so to the browser, which then refuses any fetch even
if a later change slipped one in.

The ladder (sequence) diagram of a session: the client's line on the left, the
server's on the right, one row per timeline event from top to bottom.

* Each message is an arrow from the side that sent it, labelled with its text; the
  left margin gives its time (seconds since the session's first packet) and frame.
* Plaintext SMTP is drawn solid, anything inside TLS dashed and violet, TCP control
  (SYN, FIN) thin and grey, RST red, retransmission runs orange.
* Bytes the capture never saw (``tcp-gap``) are a red block on the sender's line.
* Rows are evenly spaced (sub-second timing is in the labels); a silence of
  ``IDLE_MARK`` seconds or more gets its own space, to scale (``PX_PER_S``) up to
  ``IDLE_MAX_PX``, and beyond that a break across both lines marked "not to scale".
* The rows the verdict's evidence points at are shaded, and the last of them -- the
  point of death -- carries a marker with the verdict code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
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
from pcapsmtp.render.text import _grouped, timeline_rows
from pcapsmtp.timeline import Event, Session, endpoint

WIDTH = 1100
X_CLIENT = 200
X_SERVER = 800
TOP = 64  # below the two endpoint boxes
ROW = 24
IDLE_MARK = 1.0  # seconds of silence that get a space of their own
PX_PER_S = 30
IDLE_MAX_PX = 150  # idle drawn to scale up to 5 s; longer silences are broken
IDLE_MIN_PX = 32  # room for the "idle" label: shorter silences are marked, not to scale
LABEL_CHARS = 80  # characters of event text that fit between the lines
MAX_ROWS = 400  # rows drawn per diagram: the head and the tail, where sessions die
HEAD_ROWS = 250

_CODE_SPAN = re.compile(r"`([^`]+)`")
CSP = "default-src 'none'; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1140px;
       color: #1b1b1b; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table.sessions { border-collapse: collapse; font-size: 13px; }
table.sessions th, table.sessions td { border: 1px solid #bbb; padding: .2em .6em;
                                       text-align: left; }
table.sessions td.num { text-align: right; }
table.sessions tr.fail td.verdict { color: #b00020; font-weight: 600; }
.verdict-box { border-left: 4px solid #b00020; padding: .3em .8em; background: #fdf3f4; }
.verdict-box.ok { border-color: #2c7a2c; background: #f2f9f2; }
.verdict-box p { margin: .3em 0; }
.warning { color: #b00020; }
figure.ladder { margin: 1em 0; overflow-x: auto; }
figcaption { font-size: 12px; color: #555; }
svg.ladder { display: block; background: #fff; }
svg.ladder text { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; fill: #1b1b1b; }
svg.ladder .lifeline { stroke: #444; stroke-width: 2; }
svg.ladder .endpoint rect { fill: #eef2f7; stroke: #444; }
svg.ladder .endpoint text { font-weight: 600; }
svg.ladder .meta { fill: #555; }
svg.ladder .event line { stroke-width: 1.6; }
svg.ladder .c2s line { stroke: #1f4e9c; } svg.ladder .c2s polygon { fill: #1f4e9c; }
svg.ladder .s2c line { stroke: #2c7a2c; } svg.ladder .s2c polygon { fill: #2c7a2c; }
svg.ladder .tls line { stroke: #7b3fa0; stroke-dasharray: 6 3; }
svg.ladder .tls polygon { fill: #7b3fa0; }
svg.ladder .tls text.label { fill: #5b2a78; }
svg.ladder .tcp line { stroke: #888; stroke-width: 1; }
svg.ladder .tcp polygon { fill: #888; }
svg.ladder .rst line { stroke: #d00000; stroke-width: 2; }
svg.ladder .rst polygon { fill: #d00000; }
svg.ladder .rst text.label { fill: #d00000; }
svg.ladder .retrans line { stroke: #d97a00; stroke-dasharray: 2 3; }
svg.ladder .retrans polygon { fill: #d97a00; }
svg.ladder .gap rect { fill: #d00000; }
svg.ladder .gap text.label { fill: #d00000; font-style: italic; }
svg.ladder .mark circle { fill: #7b3fa0; }
svg.ladder .note text.label { fill: #555; font-style: italic; }
svg.ladder .evidence { fill: #fff3b0; }
svg.ladder .idle text { fill: #555; font-style: italic; }
svg.ladder .idle .break { stroke: #444; stroke-width: 2; }
svg.ladder .idle .gapfill { fill: #fff; }
svg.ladder .death line { stroke: #d00000; stroke-width: 3; }
svg.ladder .death text { fill: #d00000; font-weight: 700; }
svg.ladder .death.ok line { stroke: #2c7a2c; }
svg.ladder .death.ok text { fill: #2c7a2c; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4em 1.4em;
            font-size: 12px; }
ul.legend span { display: inline-block; width: 2.2em; height: 0; vertical-align: middle;
                 margin-right: .4em; border-top: 2px solid; }
details pre { font-size: 12px; overflow-x: auto; }
"""

LEGEND = (
    ("border-color:#1f4e9c", "client → server"),
    ("border-color:#2c7a2c", "server → client"),
    ("border-color:#7b3fa0;border-top-style:dashed", "inside TLS"),
    ("border-color:#888;border-top-width:1px", "TCP SYN/FIN"),
    ("border-color:#d00000", "RST / bytes missing from the capture"),
    ("border-color:#d97a00;border-top-style:dotted", "retransmissions"),
    ("border-color:#fff3b0;border-top-width:10px", "verdict evidence"),
)


def render(result: Analysis, timelines: bool = True, sharing: Any = None) -> str:
    """The whole page; ``timelines`` False leaves out the diagrams (``--brief``)."""
    return "\n".join(page(result, timelines, sharing)) + "\n"


def page(result: Analysis, timelines: bool, sharing: Any) -> Iterator[str]:
    title = f"pcapsmtp report: {result.capture.file}"
    yield "<!DOCTYPE html>"
    yield '<html lang="en">'
    yield "<head>"
    yield '<meta charset="utf-8">'
    yield f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    yield '<meta name="viewport" content="width=device-width, initial-scale=1">'
    yield f"<title>{escape(title)}</title>"
    yield f"<style>{STYLE}</style>"
    yield "</head>"
    yield "<body>"
    yield from header(result, sharing)
    yield from summary(result)
    for session in result.sessions:
        yield from session_section(session, timelines)
    yield from footer(sharing)
    yield "</body>"
    yield "</html>"


def header(result: Analysis, sharing: Any) -> Iterator[str]:
    info = result.capture
    yield "<header>"
    yield "<h1>pcapsmtp report</h1>"
    yield '<dl class="facts">'
    facts = [("tool", f"pcapsmtp {__version__} ({result.engine} engine)"),
             ("file", f"{info.file} ({info.packets:,} packets)")]
    span = capture_span(result)
    if span:
        facts.append(("time", span))
    links = ", ".join(linktype_name(t) for t in info.linktypes) or "none"
    snap = f"snaplen {info.snaplen}" if info.snaplen else "snaplen unknown"
    facts.append(("format", f"{info.format}{', gzip' if info.compressed else ''}, "
                            f"link type {links}, {snap}"))
    keys = embedded_keys(result)
    if keys:
        facts.append(("keys", keys))
    if sharing is not None and sharing.shown:
        facts.append(("report cut down", sharing.shown))
    for name, value in facts:
        yield f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>"
    yield "</dl>"
    if info.problem:
        yield (f'<p class="warning">WARNING: {escape(info.problem)}; '
               "sessions below are what came before it.</p>")
    yield "</header>"


def summary(result: Analysis) -> Iterator[str]:
    sessions = result.sessions
    yield '<section id="summary">'
    yield "<h2>Summary</h2>"
    if not sessions:
        yield "<p>No SMTP sessions in this report.</p>"
        yield "</section>"
        return
    yield f"<p>{len(sessions)} session(s): {escape(verdict_tally(sessions))}</p>"
    yield '<table class="sessions">'
    heads = ["#", "client", "server", "start UTC", "secs", "pkts", "ended", "verdict"]
    yield "<thead><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead>"
    yield "<tbody>"
    for s in sessions:
        cls = "ok" if _code(s).startswith("ok") else "fail"
        yield (f'<tr class="{cls}"><td class="num"><a href="#session-{s.id}">{s.id}</a></td>'
               f"<td>{escape(endpoint(s.client))}</td><td>{escape(endpoint(s.server))}</td>"
               f"<td>{utc(s.first_time, date=False)}</td>"
               f'<td class="num">{s.last_time - s.first_time:.3f}</td>'
               f'<td class="num">{s.packets}</td><td>{escape(ending_text(s))}</td>'
               f'<td class="verdict"><code>{escape(_code(s))}</code></td></tr>')
    yield "</tbody></table>"
    for finding in result.findings:
        yield f"<p><strong>Across sessions:</strong> {prose(finding.summary)}</p>"
        if finding.next_step:
            yield f"<p>Next: {prose(finding.next_step)}</p>"
    yield '<ul class="legend">'
    for style, what in LEGEND:
        yield f'<li><span style="{style}"></span>{escape(what)}</li>'
    yield "</ul>"
    yield "</section>"


def session_section(session: Session, timelines: bool) -> Iterator[str]:
    code = _code(session)
    yield (f'<section class="session" id="session-{session.id}" '
           f'data-verdict="{escape(code)}">')
    yield (f"<h2>Session {session.id}: {escape(endpoint(session.client))} → "
           f"{escape(endpoint(session.server))} — <code>{escape(code)}</code></h2>")
    prints = client_fingerprints(session)
    if prints:
        yield f'<p class="fingerprints">client TLS: <code>{escape(prints)}</code></p>'
    yield from verdict_box(session)
    if timelines:
        yield '<figure class="ladder">'
        yield from ladder(session)
        yield (f"<figcaption>Session {session.id}: client on the left, server on the right; "
               "time since the session's first packet and frame number in the margin."
               "</figcaption>")
        yield "</figure>"
        yield "<details><summary>Timeline as text</summary>"
        yield "<pre>" + escape("\n".join(timeline_rows(session))) + "</pre>"
        yield "</details>"
    yield "</section>"


def verdict_box(session: Session) -> Iterator[str]:
    verdict = session.verdict
    cls = "verdict-box ok" if _code(session).startswith("ok") else "verdict-box"
    yield f'<div class="{cls}">'
    if verdict is not None:
        yield f"<p>{prose(verdict.summary)}</p>"
        evidence = getattr(verdict, "evidence", [])[:8]
        if evidence:
            yield "<ul>"
            for ev in evidence:
                rel = (ev.time - session.first_time) if ev.time is not None else 0.0
                yield f"<li>frame {ev.frame} (+{rel:.3f} s): {prose(ev.what)}</li>"
            yield "</ul>"
        if getattr(verdict, "cannot_prove", None):
            yield f"<p><strong>Cannot tell:</strong> {prose(verdict.cannot_prove)}</p>"
        if getattr(verdict, "next_step", None):
            yield f"<p><strong>Next:</strong> {prose(verdict.next_step)}</p>"
    for note in session.notes:
        yield f"<p>note (<code>{escape(note.code)}</code>): {prose(note.summary)}</p>"
    yield "</div>"


# ---------------------------------------------------------------------------
# The ladder diagram


@dataclass
class Row:
    """One drawn row: an event (or a run of retransmissions) at a vertical position."""

    event: Event
    count: int
    last: Event
    y: float


def layout(session: Session) -> tuple[list[Row], list[tuple[float, float, float, bool]],
                                      float, int]:
    """Rows with their y, idle spaces (y, height, seconds, broken), total height, omitted."""
    groups = list(_grouped(session.events))
    omitted = 0
    if len(groups) > MAX_ROWS:
        omitted = len(groups) - MAX_ROWS
        groups = groups[:HEAD_ROWS] + [None] + groups[-(MAX_ROWS - HEAD_ROWS):]  # type: ignore
    rows: list[Row] = []
    idles: list[tuple[float, float, float, bool]] = []
    y = float(TOP + ROW)
    prev = session.first_time
    for group in groups:
        if group is None:
            y += ROW  # the "events not drawn" marker gets its own row
            rows.append(Row(Event(prev, 0, "", "omitted", ""), omitted, None, y))  # type: ignore
            continue
        event, count, last = group
        idle = event.time - prev
        if idle >= IDLE_MARK:
            space = max(min(idle * PX_PER_S, IDLE_MAX_PX), IDLE_MIN_PX)
            broken = idle * PX_PER_S > IDLE_MAX_PX
            idles.append((y, space, idle, broken))
            y += space
        prev = max(prev, event.time)
        rows.append(Row(event, count, last, y))
        y += ROW
    return rows, idles, y + ROW, omitted


def ladder(session: Session) -> Iterator[str]:
    rows, idles, height, _ = layout(session)
    evidence = _evidence_frames(session)
    death = _death_row(rows, session)
    yield (f'<svg class="ladder" data-session="{session.id}" width="{WIDTH}" '
           f'height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
           f'aria-label="Ladder diagram of session {session.id}">')
    yield f"<title>Session {session.id}: {escape(_code(session))}</title>"
    for row in rows:
        if row.event.frame in evidence:
            yield (f'<rect class="evidence" x="0" y="{row.y - ROW + 6:.0f}" '
                   f'width="{WIDTH}" height="{ROW}"/>')
    yield from _endpoints(session, height)
    for y, space, seconds, broken in idles:
        yield from _idle(y, space, seconds, broken)
    for row in rows:
        yield from _row(session, row)
    if death is not None:
        yield from _death(session, death, rows)
    yield "</svg>"


def _endpoints(session: Session, height: float) -> Iterator[str]:
    for x, who, addr in ((X_CLIENT, "client", session.client),
                         (X_SERVER, "server", session.server)):
        yield (f'<line class="lifeline" x1="{x}" y1="{TOP - 16}" x2="{x}" '
               f'y2="{height - 8:.0f}"/>')
        label = f"{who} {endpoint(addr)}"
        natural = len(label) * 7.4 + 16
        w = min(natural, 2 * X_CLIENT - 10)  # a long IPv6 endpoint is squeezed to fit
        fit = f' textLength="{w - 12:.0f}" lengthAdjust="spacingAndGlyphs"' if natural > w else ""
        yield (f'<g class="endpoint {who}"><rect x="{x - w / 2:.0f}" y="8" width="{w:.0f}" '
               f'height="26" rx="4"/><text x="{x}" y="26" text-anchor="middle"{fit}>'
               f"{escape(label)}</text></g>")


def _idle(y: float, space: float, seconds: float, broken: bool) -> Iterator[str]:
    mid = y + space / 2 - 18  # the middle of the free band between the two rows
    cls = "idle broken" if broken else "idle"
    to_scale = not broken and seconds * PX_PER_S >= IDLE_MIN_PX
    what = f"{seconds:.1f} s idle" + ("" if to_scale else " (not to scale)")
    yield f'<g class="{cls}" data-seconds="{seconds:.3f}">'
    if broken:
        for x in (X_CLIENT, X_SERVER):
            yield (f'<rect class="gapfill" x="{x - 8}" y="{mid - 5:.0f}" width="16" '
                   f'height="10"/>')
            for dy in (-5, 5):
                yield (f'<line class="break" x1="{x - 9}" y1="{mid + dy + 3:.0f}" '
                       f'x2="{x + 9}" y2="{mid + dy - 3:.0f}"/>')
    yield (f'<text x="{(X_CLIENT + X_SERVER) / 2:.0f}" y="{mid + 4:.0f}" '
           f'text-anchor="middle">{escape(what)}</text>')
    yield "</g>"


def _row(session: Session, row: Row) -> Iterator[str]:
    e = row.event
    if e.kind == "omitted":
        yield (f'<g class="event note omitted"><text class="label" '
               f'x="{(X_CLIENT + X_SERVER) / 2:.0f}" y="{row.y:.0f}" text-anchor="middle">'
               f"… {row.count:,} events not drawn (see the text timeline) …</text></g>")
        return
    rel = e.time - session.first_time
    cls = _classes(e, row.count)
    attrs = (f'class="event {cls}" data-frame="{e.frame}" data-kind="{escape(e.kind)}" '
             f'data-dir="{escape(e.direction)}"')
    yield f"<g {attrs}>"
    yield f'<text class="meta" x="6" y="{row.y:.0f}">+{rel:.3f}</text>'
    yield (f'<text class="meta" x="{X_CLIENT - 10}" y="{row.y:.0f}" text-anchor="end">'
           f"#{e.frame}</text>")
    label = _label(e, row)
    mid = (X_CLIENT + X_SERVER) / 2
    if e.kind == "tcp-gap" and e.direction in ("C", "S"):
        x = X_CLIENT if e.direction == "C" else X_SERVER
        yield f'<rect x="{x - 5}" y="{row.y - 14:.0f}" width="10" height="18"/>'
        yield (f'<text class="label" x="{mid:.0f}" y="{row.y:.0f}" text-anchor="middle">'
               f"{escape(label)}</text>")
    elif e.kind == "smtp-tls-start" and e.direction in ("C", "S"):
        x = X_CLIENT if e.direction == "C" else X_SERVER
        dx = 12 if e.direction == "C" else -12
        anchor = "start" if e.direction == "C" else "end"
        yield f'<g class="mark"><circle cx="{x}" cy="{row.y - 4:.0f}" r="5"/></g>'
        yield (f'<text class="label" x="{x + dx}" y="{row.y:.0f}" text-anchor="{anchor}">'
               f"{escape(label)}</text>")
    elif e.direction in ("C", "S"):
        yield from _arrow(e.direction, row.y)
        yield (f'<text class="label" x="{mid:.0f}" y="{row.y - 6:.0f}" text-anchor="middle">'
               f"{escape(label)}</text>")
    else:
        yield (f'<text class="label" x="{mid:.0f}" y="{row.y:.0f}" text-anchor="middle">'
               f"{escape(label)}</text>")
    yield "</g>"


def _arrow(direction: str, y: float) -> Iterator[str]:
    """A slightly falling arrow from the sender's line to the receiver's."""
    x1, x2 = (X_CLIENT, X_SERVER) if direction == "C" else (X_SERVER, X_CLIENT)
    y1, y2 = y - 2, y + 4
    tip = -1 if direction == "C" else 1
    yield f'<line x1="{x1}" y1="{y1:.0f}" x2="{x2 + 2 * tip}" y2="{y2:.0f}"/>'
    yield (f'<polygon points="{x2},{y2:.0f} {x2 + 10 * tip},{y2 - 5:.0f} '
           f'{x2 + 10 * tip},{y2 + 5:.0f}"/>')


def _classes(e: Event, count: int) -> str:
    classes = {"C": "c2s", "S": "s2c"}.get(e.direction, "note")
    if e.kind.startswith("tls-") or e.tls:
        classes += " tls"
    if e.kind in ("tcp-syn", "tcp-syn-ack", "tcp-fin"):
        classes += " tcp"
    elif e.kind == "tcp-rst":
        classes += " rst"
    elif e.kind == "tcp-retransmission":
        classes += " retrans"
    elif e.kind == "tcp-gap":
        classes += " gap"
    return classes


def _label(e: Event, row: Row) -> str:
    text = e.text
    if row.count > 1:
        text = f"{row.count} retransmissions, frames {e.frame}-{row.last.frame}"
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return text


def _evidence_frames(session: Session) -> set[int]:
    verdict = session.verdict
    return {ev.frame for ev in getattr(verdict, "evidence", None) or [] if ev.frame}


def _death_row(rows: list[Row], session: Session) -> Row | None:
    """The row of the verdict's last evidence frame; else the last row (or None)."""
    frames = _evidence_frames(session)
    drawn = [r for r in rows if r.event.kind != "omitted"]
    if not drawn:
        return None
    hits = [r for r in drawn if r.event.frame in frames]
    if hits:
        return max(hits, key=lambda r: (r.event.frame, r.y))
    return drawn[-1]


def _death(session: Session, row: Row, rows: list[Row]) -> Iterator[str]:
    code = _code(session)
    ok = code.startswith("ok")
    x = X_SERVER + 24
    y = row.y - 4
    yield (f'<g class="death{" ok" if ok else ""}" data-frame="{row.event.frame}" '
           f'data-verdict="{escape(code)}">')
    if not ok:
        yield f'<line x1="{x - 7}" y1="{y - 7:.0f}" x2="{x + 7}" y2="{y + 7:.0f}"/>'
        yield f'<line x1="{x - 7}" y1="{y + 7:.0f}" x2="{x + 7}" y2="{y - 7:.0f}"/>'
    else:
        yield f'<line x1="{x - 8}" y1="{y:.0f}" x2="{x + 8}" y2="{y:.0f}"/>'
    yield f'<text x="{x + 14}" y="{row.y:.0f}">{escape(code)}</text>'
    yield "</g>"


def footer(sharing: Any) -> Iterator[str]:
    yield "<footer>"
    redacted = sharing.redaction_line() if sharing is not None else None
    if redacted:
        yield '<section id="redacted"><h2>Redacted</h2>'
        yield (f"<p>{escape(redacted)}, replaced by pseudonyms (the same original, "
               "the same pseudonym).</p></section>")
    yield f"<p>Made by pcapsmtp {escape(__version__)}.</p>"
    yield "</footer>"


def prose(text: str) -> str:
    """A rule's sentence, escaped, with its `quoted` parts as <code>."""
    return _CODE_SPAN.sub(r"<code>\1</code>", escape(text))
