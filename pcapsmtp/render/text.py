"""The plain-text report: what people paste into a mailing list.

At most 100 columns, deterministic (same capture, same bytes out), the tool
version and the capture's facts at the top, then a summary table, then each
session with its verdict and timeline.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from tabulate import tabulate

from pcapsmtp import __version__
from pcapsmtp.analyze import Analysis
from pcapsmtp.flows import DEFAULT_PORTS
from pcapsmtp.render.common import (
    around_id,
    capture_span,
    client_fingerprints,
    embedded_keys,
    ending_text,
    linktype_name,
    mark,
    utc,
    verdict_tally,
)
from pcapsmtp.render.common import verdict_code as _code
from pcapsmtp.store import parallel_map, plain_stubs, rendered, verdicts
from pcapsmtp.timeline import Event, Session, endpoint

WIDTH = 100
# Silence between two events worth a line of its own in the timeline.
IDLE_MARK = 1.0
# Reply lines shown per reply; the rest are counted.
REPLY_LINES = 16


def render(result: Analysis, timelines: bool = True, sharing: Any = None) -> str:
    """``sharing`` (a redact.Sharing) adds what a cut-down or redacted report says of itself."""
    return "\n".join(lines(result, timelines, sharing)) + "\n"


def lines(result: Analysis, timelines: bool = True, sharing: Any = None) -> Iterator[str]:
    yield from header(result)
    if sharing is not None and sharing.shown:
        yield from _wrap(f"report cut down: {sharing.shown}", "", "  ")
    yield ""
    if sharing is not None and sharing.shown and not result.sessions:
        yield "No session matches."
    else:
        yield from summary(result.sessions)
    for finding in result.findings:
        yield ""
        yield from _wrap(f"Across sessions: {finding.summary}", "", "  ")
        if finding.next_step:
            yield from _wrap("Next: " + finding.next_step, "  ", "  ")
    done = rendered(result.sessions, on_add(timelines)[0])
    if done is not None:  # rendered as each session was finished (analyze's render=)
        for block in done:
            yield ""
            yield block  # the block's lines, joined
    else:
        # loaded and rendered by forked workers for a big capture (store.parallel_map)
        for lines_ in parallel_map(result.sessions, partial(_block_lines, timeline=timelines)):
            yield ""
            yield from lines_
    redacted = sharing.redaction_line() if sharing is not None else None
    if redacted:
        yield ""
        yield from _wrap(f"redacted: {redacted} (replaced by pseudonyms)", "", "  ")


def header(result: Analysis) -> Iterator[str]:
    info = result.capture
    yield f"pcapsmtp {__version__} ({result.engine} engine)"
    span = capture_span(result)
    span = f", {span}" if span else ""
    yield from _wrap(f"file: {info.file}  ({info.packets:,} packets{span})", "", "  ")
    links = ", ".join(linktype_name(t) for t in info.linktypes) or "none"
    snap = f"snaplen {info.snaplen}" if info.snaplen else "snaplen unknown"
    gz = ", gzip" if info.compressed else ""
    yield f"format: {info.format}{gz}, link type {links}, {snap}"
    keys = embedded_keys(result)
    if keys:
        yield from _wrap(f"keys: {keys}", "", "  ")
    skipped = _decode_notes(result)
    if skipped:
        yield from _wrap("decode: " + skipped, "", "  ")
    if info.problem:
        yield from _wrap(f"WARNING: {info.problem}; sessions below are what came before it.",
                         "", "  ")
    found = greeting_fallback(result)
    if found:
        yield from _wrap(found, "", "  ")


def greeting_fallback(result: Analysis) -> str:
    """The header's word when SMTP was found only by its greeting, off the SMTP ports."""
    if not result.selection.by_greeting_fallback:
        return ""
    light = plain_stubs(result.sessions)  # ports only: the stubs suffice (and are kept)
    ports = sorted({s.server[1] for s in (light if light is not None else result.sessions)})
    return (f"ports: no SMTP on the SMTP ports ({', '.join(map(str, sorted(DEFAULT_PORTS)))}); "
            f"found by its 220 greeting on port(s) {', '.join(map(str, ports))}, as "
            "--any-port does")


def _decode_notes(result: Analysis) -> str:
    st = result.decode
    parts = []
    for lt, n in sorted(st.unknown_linktypes.items()):
        parts.append(f"{n:,} frames of unsupported link type {linktype_name(lt)}")
    if st.malformed:
        parts.append(f"{st.malformed:,} malformed frames skipped")
    if st.fragments_incomplete:
        parts.append(f"{st.fragments_incomplete:,} IP datagrams with missing fragments")
    return "; ".join(parts)


# Ranges of session numbers named per verdict on the "needing attention" lines; the rest
# of that verdict's sessions are counted.
ATTENTION_RANGES = 12


def summary(sessions: Sequence[Session]) -> Iterator[str]:
    if not sessions:
        yield "No SMTP sessions found (ports: see --port, or --any-port to find them by banner)."
        return
    yield from _wrap(f"sessions: {len(sessions)}  ({verdict_tally(sessions)})", "", "  ")
    # verdicts without loading every session from the spool
    by_code: dict[str, list[int]] = {}
    for sid, code in verdicts(sessions):
        if not code.startswith("ok"):
            by_code.setdefault(code, []).append(sid)
    if by_code:
        yield "needing attention:"
        for code, ids in by_code.items():
            yield from _wrap(f"{code} {len(ids)}: {id_ranges(ids)}", "  ", "    ")
    yield ""
    yield from session_table(sessions)


def id_ranges(ids: Sequence[int], most: int = ATTENTION_RANGES) -> str:
    """'#3-#14, #20, #22' for 3..14, 20, 22: thirty sessions of one verdict read as a few
    runs (a server that stopped answering), not thirty numbers; beyond ``most`` runs,
    the rest are counted."""
    runs: list[list[int]] = []
    for sid in sorted(ids):
        if runs and sid == runs[-1][1] + 1:
            runs[-1][1] = sid
        else:
            runs.append([sid, sid])
    shown = [f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs[:most]]
    rest = sum(b - a + 1 for a, b in runs[most:])
    return ", ".join(shown) + (f", and {rest:,} more" if rest else "")


# When the table is wider than WIDTH, cells are wrapped onto more lines of their row,
# column by column in this order, each down to its width here: the columns themselves
# never change between reports, so a script or a reader finds start UTC and pkts where
# they always are, and no cell loses a character (a verdict code wraps at a hyphen).
_SHRINK = (("verdict", 18), ("ended", 7), ("client", 22), ("server", 22),
           ("client", 14), ("server", 14))


def session_table(sessions: list[Session]) -> list[str]:
    cells = {
        "#": lambda s: s.id, "client": lambda s: endpoint(s.client),
        "server": lambda s: endpoint(s.server), "start UTC": lambda s: utc(s.first_time, False),
        "secs": lambda s: f"{s.last_time - s.first_time:.3f}", "pkts": lambda s: s.packets,
        "ended": ending_text, "verdict": _code,
    }
    columns = list(cells)
    # every cell once.  A spooled store's stubs hold every cell's input (store.stub);
    # else each session is loaded once, by workers for a big capture
    getters = list(cells.values())
    light = plain_stubs(sessions)
    rows = [[get(s) for get in getters] for s in light] if light is not None else \
        list(parallel_map(sessions, lambda s: [get(s) for get in getters]))
    cells_of = [[str(c) for c in row] for row in rows]  # as they are, for each re-wrap
    rows = [list(row) for row in cells_of]
    stages = iter(_SHRINK)
    while True:
        lines = tabulate(rows, headers=columns, tablefmt="simple",
                         disable_numparse=True).splitlines()
        over = max(map(len, lines)) - WIDTH
        stage = next(stages, None) if over > 0 else None
        if stage is None:
            return [_clip(line) for line in lines]
        name, least = stage
        i = columns.index(name)
        widest = max(len(part) for r in rows for part in r[i].split("\n"))
        keep = max(least, max(len(name), widest) - over)
        for row, whole in zip(rows, cells_of, strict=True):
            if len(whole[i]) > keep:
                row[i] = "\n".join(textwrap.wrap(whole[i], keep, break_on_hyphens=True))


def _block_lines(session: Session, timeline: bool) -> list[str]:
    return list(session_block(session, timeline))


def block_parts(session: Session, timeline: bool = True) -> tuple[str, str]:
    """The session's block, its lines joined, split around the id in its title: see
    analyze's render= (lines() yields the joined block as one line: same output)."""
    return around_id("\n".join(session_block(session, timeline)), "Session ", session.id)


def on_add(timelines: bool = True) -> tuple[str, Callable[[Session], tuple[str, str]]]:
    """analyze(..., render=on_add(...)): blocks rendered as sessions are finished."""
    return ("text" if timelines else "text-brief"), partial(block_parts, timeline=timelines)


def session_block(session: Session, timeline: bool = True) -> Iterator[str]:
    title = (f"Session {session.id}   {endpoint(session.client)} → {endpoint(session.server)}"
             f"   {_code(session)}")
    yield title
    prints = client_fingerprints(session)
    if prints:
        yield f"  client TLS: {prints}"
    verdict = session.verdict
    if verdict is not None:
        yield from _wrap(verdict.summary, "  ", "  ")
        for ev in getattr(verdict, "evidence", [])[:8]:
            rel = ev.time - session.first_time
            yield from _wrap(f"frame {ev.frame} (+{rel:.3f} s): {ev.what}", "    - ", "      ")
        if getattr(verdict, "cannot_prove", None):
            yield from _wrap("Cannot tell: " + verdict.cannot_prove, "  ", "  ")
        if getattr(verdict, "next_step", None):
            yield from _wrap("Next: " + verdict.next_step, "  ", "  ")
    for note in session.notes:
        yield from _wrap(f"note ({note.code}): {note.summary}", "  ", "    ")
    if timeline:
        yield ""
        yield from timeline_rows(session)


def timeline_rows(session: Session) -> list[str]:
    """The timeline table's lines, built in one list (no generator per event): text
    blocks of the 100k benchmark 110 -> 91 us a session."""
    rows = ["      +time  dir   frame  event"]
    append = rows.append
    first = prev = session.first_time
    for event, count, last in _grouped(session.events):
        t = event.time
        idle = t - prev
        if idle >= IDLE_MARK:
            append(f"{'':>11}  ..{'':>8}  ({idle:.1f} s without traffic)")
        if t > prev:
            prev = t
        text = event.text if count == 1 else \
            f"{count} retransmissions, frames {event.frame}-{last.frame}"
        lead = f"{t - first:11.3f}  {mark(event.direction, event.tls):3} {event.frame:>7}  "
        line = lead + text
        append(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
        if event.kind == "smtp-reply":
            extra = _reply_continuations(event)
            if extra:
                pad = " " * len(lead)
                rows.extend(_clip(pad + ln) for ln in extra)
    return rows


def _grouped(events: Iterable[Event]) -> Iterator[tuple[Event, int, Event]]:
    """Runs of retransmissions collapse into one row: they are evidence, not dialogue."""
    run: list[Event] = []
    for e in events:
        if run and (e.kind != "tcp-retransmission" or e.direction != run[0].direction):
            yield run[0], len(run), run[-1]
            run = []
        if e.kind == "tcp-retransmission":
            run.append(e)
            continue
        yield e, 1, e
    if run:
        yield run[0], len(run), run[-1]


def _reply_continuations(event: Event) -> list[str]:
    if event.kind != "smtp-reply":
        return []
    lines = event.fields.get("lines") or []
    code = event.fields.get("code")
    shown = lines[1:REPLY_LINES]
    if code is None:
        more = list(shown)
    else:
        last = len(lines) - 1
        more = [f"{code}{' ' if i == last else '-'}{ln}" for i, ln in enumerate(shown, 1)]
    if len(lines) > REPLY_LINES:
        more.append(f"(+{len(lines) - REPLY_LINES} more lines)")
    return more


def _clip(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def _wrap(text: str, first: str, rest: str) -> list[str]:
    # Most evidence lines fit on one: then textwrap would return ``first + text`` --
    # printable text has no tab or line break to rewrite, and a first line keeps its
    # leading spaces, only trailing ones go.  Text blocks of the 100k benchmark:
    # 147 -> 112 us a session (CPU, in-process).
    if text.isprintable() and max(len(first), len(rest)) < WIDTH:
        if len(first) + len(text) <= WIDTH and text[-1:] not in ("", " "):
            return [first + text]
        return _wrap_printable(text, first, rest) or [first.rstrip()]
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=True, break_on_hyphens=False) or [first.rstrip()]


def _wrap_printable(text: str, first: str, rest: str) -> list[str]:
    """``textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
    break_long_words=True, break_on_hyphens=False)`` for printable text, a line at a time.

    textwrap splits the text into chunks (words and runs of spaces: printable text has
    no other whitespace) and fills each line chunk by chunk; here a line ends at the
    last chunk boundary within the width, found with rfind.  The same rules: a chunk
    wider than a whole line is cut to fill the line, a line's trailing run of spaces is
    dropped, and so is a leading one, except on the first line.  Text blocks of the 100k
    benchmark: textwrap took about half their time (2.3 wrapped lines a session);
    tests/test_render_formats.py compares the two on random text.
    """
    lines: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        indent = rest if lines else first
        width = WIDTH - len(indent)
        if lines and text[pos] == " ":  # a leading run of spaces, dropped
            pos = n - len(text[pos:].lstrip(" "))
            if pos == n:
                break
        limit = pos + width
        end = n
        keep_spaces = False
        if limit < n:
            # the last chunk boundary at or before ``limit`` (``pos`` if none is)
            if (text[limit - 1] == " ") != (text[limit] == " "):
                cut = limit
            elif text[limit] == " ":
                cut = pos + len(text[pos:limit].rstrip(" "))
            else:
                cut = text.rfind(" ", pos, limit) + 1 or pos
            # the chunk that begins there, which does not fit: wider than a whole line?
            if text[cut] == " ":
                after = n - len(text[cut:].lstrip(" "))
            else:
                after = text.find(" ", cut)
                if after < 0:
                    after = n
            if after - cut > width:  # cut to fill the line
                end = limit
                # when the line is full without it, textwrap adds its empty first part
                # and drops that as the line's trailing whitespace, not the spaces before
                keep_spaces = cut == limit
            else:
                end = cut
        line = text[pos:end] if keep_spaces else text[pos:end].rstrip(" ")
        if line:
            lines.append(indent + line)
        pos = end
    return lines
