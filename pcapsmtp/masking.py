"""Client bytes that must not be shown, where they surface outside the SMTP parser.

The SMTP parser masks AUTH exchanges and only counts message bodies, but three kinds
of event quote raw client bytes without knowing what they were: resent bytes that
differ from the first copy (``tcp-overlap``, from the reassembly), bytes that are not
TLS where TLS was due (``tls-not-tls``), and lines the SMTP parser could not place
(``smtp-unparsed``, e.g. plaintext pipelined behind STARTTLS).  Once a session is
parsed, the byte ranges of its AUTH lines and bodies are known; :func:`mask_session`
then rewrites those events before any rule or renderer reads them.  Credentials never
leave, in any output format.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from pcapsmtp.timeline import Event

# An AUTH command at a line start in quoted text (raw, or escaped: a line break shows
# as the two characters backslash and n), and a SASL mechanism name after it.
_AUTH_LINE = re.compile(r"(?i)(?:^|(?<=\n)|(?<=\\n))[ \t]*AUTH\b")
_MECHANISM = re.compile(r"[ \t]+[A-Z0-9_-]{1,20}(?![^ \t\\])")
_AUTH_WORD = re.compile(r"(?i)\bAUTH\b")

_PREVIEW_KINDS = ("tls-not-tls", "smtp-unparsed")


def mask_auth_text(text: str, anywhere: bool = False) -> str:
    """``text`` with everything after an AUTH command's mechanism name replaced by ****:
    an initial response, and any credential lines a broken client sent behind it.
    ``anywhere``: the command need not start a line (a text quoting a cut preview)."""
    m = (_AUTH_WORD if anywhere else _AUTH_LINE).search(text)
    if m is None:
        return text
    mech = _MECHANISM.match(text, m.end())
    keep = mech.end() if mech else m.end()
    return text if keep == len(text) else text[:keep] + " ****"


def _hidden_ranges(events: list[Event]) -> list[tuple[int, int, str]]:
    """(start, end, what) of the client's AUTH lines and message bodies, by start."""
    out = []
    for e in events:
        if e.direction != "C":
            continue
        if e.kind == "smtp-auth-data" or (
                e.kind == "smtp-command" and e.fields.get("verb") == "AUTH"):
            what = "AUTH data"
        elif e.kind == "smtp-body":
            what = "message body"
        else:
            continue
        start, end = e.fields.get("start"), e.fields.get("end")
        if isinstance(start, int) and isinstance(end, int):
            out.append((start, end, what))
    out.sort()
    return out


def _covering(ranges: list[tuple[int, int, str]], starts: list[int], lo: int,
              hi: int) -> str | None:
    """What a hidden range overlapping [lo, hi) holds, if one does.  The ranges are lines
    and bodies of one stream, so disjoint: only the last one starting before ``hi`` can
    reach into it."""
    i = bisect_right(starts, hi - 1) - 1
    if i >= 0 and ranges[i][1] > lo:
        return ranges[i][2]
    return None


def mask_session(events: list[Event]) -> None:
    """Rewrite, in place, the events that quote client bytes of AUTH lines or bodies."""
    ranges: list[tuple[int, int, str]] | None = None
    for e in events:
        if e.direction != "C":
            continue
        if e.kind == "tcp-overlap":
            if ranges is None:
                ranges = _hidden_ranges(events)
                starts = [r[0] for r in ranges]
            offset = e.fields.get("offset")
            if not isinstance(offset, int):
                continue
            length = max(len(e.fields.get("first") or ""), 1)
            what = _covering(ranges, starts, offset, offset + length)
            if what is None:
                _mask_fields(e, ("first", "second"))
                continue
            e.fields["first"] = e.fields["second"] = f"[{what}, not shown]"
            e.text = f"bytes differ from the first copy ({what}, not shown)"
        elif e.kind in _PREVIEW_KINDS:
            _mask_fields(e, ("preview",))


def _mask_fields(e: Event, names: tuple[str, ...]) -> None:
    """AUTH quoted in text fields outside any parsed AUTH line, and in the event's text
    where it quotes them ("not TLS: AUTH PLAIN ..." quotes the preview)."""
    for name in names:
        value = e.fields.get(name)
        if isinstance(value, str):
            new = mask_auth_text(value)
            if new != value:
                e.fields[name] = new
                e.text = e.text.replace(value, new) if value in e.text else \
                    mask_auth_text(e.text, anywhere=True)
    e.text = mask_auth_text(e.text)
