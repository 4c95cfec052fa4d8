"""Bytes rewritten in flight: the signatures of SMTP "fixup"/inspection middleboxes.

Cisco PIX/ASA ``fixup smtp`` / ESMTP inspection replaces what it does not
allow with ``X`` (commands, EHLO keywords) or ``*`` (the banner), keeping the
length so TCP sequence numbers stay valid.  The rules use that: a masked word
of length n stands where an n-byte word was.  A PIX that inspects segment by
segment masks a command split across two segments (``...\\r\\nXX`` +
``XX TO:<...>``): the tell is an X run that straddles a segment boundary.
"""

from __future__ import annotations

import re

from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    answers,
    commands,
    ev,
    f,
    greeting,
    replies,
    reply_class,
    reply_code,
    reply_text,
    verb,
    where,
)
from pcapsmtp.timeline import Event, Session

_XRUN = re.compile(r"^X{2,}")
#: Commands by length, to name what a masked word probably was (the argument decides ties).
_BY_ARGUMENT = (("TO:", "RCPT"), ("FROM:", "MAIL"))
_KEYWORDS_BY_LEN = {8: "STARTTLS (or CHUNKING/8BITMIME)", 10: "PIPELINING",
                    4: "AUTH or SIZE", 3: "DSN", 19: "ENHANCEDSTATUSCODES"}

CANNOT = ("which device rewrote the bytes, or where on the path it sits: only that they "
          "changed between the sender and the capture point")
NEXT = ("disable SMTP inspection on the firewall (Cisco: `no fixup protocol smtp 25` / "
        "`no inspect esmtp`) and capture on both sides of it to confirm")


def _guess(run: int, argument: str) -> str:
    arg = argument.upper()
    for prefix, name in _BY_ARGUMENT:
        if arg.startswith(prefix) and run == len(name):
            return name
    return {4: "a 4-letter command (EHLO/HELO/MAIL/RCPT/DATA...)", 8: "STARTTLS"}.get(
        run, f"a {run}-byte word")


def _boundary(e: Event, run: int) -> tuple[int, int, int] | None:
    """(byte offset in the line, frame before, frame after) when a segment boundary cuts the run.

    ``segments`` is ``[[frame, offset_in_line, length], ...]``: a boundary sits
    where the next segment's offset starts.
    """
    segs = f(e, "segments", default=None) or []
    for before, after in zip(segs, segs[1:], strict=False):
        if 0 < int(after[1]) < run:
            return int(after[1]), int(before[0]), int(after[0])
    return None


def _after(session: Session, e: Event) -> Event | None:
    later = [r for r in replies(session) if (r.time, r.frame) > (e.time, e.frame)
             and reply_class(r) in (4, 5)]
    return later[0] if later else None


@rule
@needs("smtp-command")
def masked_command(session: Session) -> Finding | None:
    """X-masked client command, naming the frames and the byte where the segments meet."""
    for c in commands(session):
        line = c.text
        m = _XRUN.match(line)
        if not m or c.tls:
            continue
        run = len(m.group(0))
        arg = str(f(c, "argument", default="") or "")
        original = _guess(run, arg)
        cut = _boundary(c, run)
        evidence = [ev(c, f"command arrived as {line!r}")]
        if cut is not None:
            off, fa, fb = cut
            where_txt = (f"The masked bytes straddle a TCP segment boundary: bytes 0-{off - 1} "
                         f"of the line came in frame {fa}, bytes {off}-{run - 1} in frame {fb} "
                         f"(the boundary is at byte {off} of the line). A per-segment "
                         f"inspector could not read the command whole and masked both parts "
                         f"(Cisco PIX/ASA `fixup smtp` signature).")
            evidence.insert(0, ev(c, f"segments: frames {fa} and {fb}, boundary at byte {off}"))
        else:
            where_txt = ("The length is preserved, as an SMTP inspection firewall does when it "
                         "masks a command it does not allow.")
        reply = _after(session, c)
        tail = ""
        if reply is not None:
            evidence.append(ev(reply, f"server answered the masked command: {reply.text}"))
            tail = (f" The server then answered `{reply.text}` ({where(session, reply)}), "
                    "a consequence of the rewrite, not its cause.")
        return Finding(
            code="middlebox-rewrite",
            summary=f"The client's command arrived as {line!r} ({where(session, c)}): {run} "
            f"bytes replaced with X, where {original} stood. {where_txt}{tail}",
            evidence=evidence,
            cannot_prove=CANNOT,
            next_step=NEXT,
            verdict=True,
            severity="error",
        )
    return None


@rule
@needs("smtp-reply")
def asterisk_banner(session: Session) -> Finding | None:
    """A greeting mostly made of '*': ``220 *****0****2*****`` (PIX hides the banner)."""
    g = greeting(session)
    if g is None:
        return None
    text = reply_text(g)
    if text.count("*") < 4:
        return None  # the test below, without listing every character of every banner
    visible = [ch for ch in text if not ch.isspace()]
    stars = visible.count("*")
    if stars < 4 or stars < 0.5 * len(visible):
        return None
    return Finding(
        code="middlebox-rewrite",
        summary=f"The server's greeting arrived as `{g.text}` ({where(session, g)}): its text "
        "was replaced with asterisks, the Cisco PIX/ASA SMTP inspection signature; the same "
        "device masks commands and EHLO keywords it does not allow (STARTTLS among them).",
        evidence=[ev(g, "masked greeting")],
        cannot_prove=CANNOT,
        next_step=NEXT,
        verdict=True,
        severity="warning",
    )


_MASKED_KEYWORD = re.compile(r"^X{3,}[A-Z]?$")


@rule
@needs("smtp-reply")
def masked_ehlo_keyword(session: Session) -> Finding | None:
    """An EHLO keyword such as ``XXXXXXXA``: an 8-byte shadow of STARTTLS."""
    for r in replies(session):
        caps = r.fields.get("capabilities")
        if not caps:
            continue
        # '"XXX" in k' first: a masked keyword holds it, and the test is cheaper than
        # split + regex for every keyword of every EHLO reply (8.2 -> ~3 us a session)
        masked = [k for k in map(str, caps)
                  if "XXX" in k and _MASKED_KEYWORD.match(k.split()[0] if k.split() else "")]
        if not masked:
            continue
        k = masked[0].split()[0]
        probably = _KEYWORDS_BY_LEN.get(len(k), f"a {len(k)}-letter keyword")
        tls_after = any(e.kind.startswith("tls-") for e in session.events)
        effect = ("" if tls_after else
                  " The client therefore saw no STARTTLS offer and did not start TLS.")
        return Finding(
            code="middlebox-rewrite",
            summary=f"The EHLO reply ({where(session, r)}) lists the keyword `{k}`: {len(k)} "
            f"bytes masked in flight, where {probably} stood (Cisco ASA ESMTP inspection "
            f"turns STARTTLS into XXXXXXXA).{effect}",
            evidence=[ev(r, f"masked EHLO keyword {k}")],
            cannot_prove=CANNOT,
            next_step=NEXT,
            verdict=True,
            severity="error",
        )
    return None


#: Commands every SMTP server knows: 'not recognized' to one of them, well formed, means the
#: server did not read what the client sent.
_CORE_VERBS = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"}
_UNRECOGNIZED = re.compile(r"not recogni[sz]ed|unrecogni[sz]ed|unknown command", re.I)
_WELL_FORMED = re.compile(r"^(MAIL FROM:|RCPT TO:)\s*<[^<>]*>|^(HELO|EHLO) \S+$|"
                          r"^(DATA|RSET|NOOP|QUIT)$", re.I)


def _refusal_of(session: Session, c: Event) -> Event | None:
    """The 500/502 'command not recognized' that answered command ``c``, if one did."""
    want = verb(c)
    for r in replies(session):
        if (r.time, r.frame) < (c.time, c.frame) or answers(r) != want:
            continue
        if reply_code(r) in (500, 502) and _UNRECOGNIZED.search(reply_text(r)):
            return r
        return None  # the first reply to this verb after it was something else
    return None


@rule
@needs("smtp-command")
def split_command_refused(session: Session) -> Finding | None:
    """A well-formed command that crossed a segment boundary, answered 'not recognized'.

    Seen from the sender's side of a PIX-style inspector (issue 16): the client's bytes are
    intact here, the inspector rewrote the command it could not read whole, and the server
    answered the rewrite.  The client's own capture cannot show the rewrite, so the finding
    says what it rests on and which capture proves it.
    """
    for c in commands(session):
        segs = f(c, "segments", default=None) or []
        if c.tls or len(segs) < 2 or verb(c) not in _CORE_VERBS or not f(c, "known"):
            continue
        if not _WELL_FORMED.match(c.text):
            continue
        r = _refusal_of(session, c)
        if r is None:
            continue
        fa, (fb, off) = segs[0][0], segs[1][:2]
        return Finding(
            code="middlebox-rewrite",
            summary=f"The client's `{c.text}` was well formed and crossed a TCP segment "
            f"boundary (bytes 0-{int(off) - 1} in frame {fa}, the rest from frame {fb}); the "
            f"server answered `{r.text}` ({where(session, r)}), as if it read something else. "
            "That is the signature of an SMTP-inspecting middlebox (Cisco PIX/ASA `fixup "
            "smtp`) that judges each segment alone and masks a command split across two: "
            "a server knows this command.",
            evidence=[ev(c, f"command split across frames {fa} and {fb}: {c.text}"),
                      ev(r, f"server answered: {r.text}")],
            cannot_prove="the rewrite itself: the client's bytes are intact at this capture "
            "point; a capture at the server (the command arriving X-masked) or `pcapsmtp "
            "compare` of both proves it",
            next_step="capture on the server side and compare with `pcapsmtp compare`; " + NEXT,
            verdict=True,
            severity="error",
        )
    return None
