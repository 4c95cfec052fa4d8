"""Diagnosis: rules read a session timeline and say what it means.

This is the policy half of Zeek's analyzer/script split: the dissectors and the
timeline builder say *what happened* (events with frames and times); the rules
here say *what it means* for a mail administrator.  A rule never sees bytes.

A rule is a function ``Session -> Finding | list[Finding] | None`` decorated
with :func:`rule`; it lives in one module of this package, one concern per
module.  Adding a rule touches one place: the module that holds it (modules are
discovered, not listed).  Cross-session rules take the list of diagnosed
sessions and are decorated with :func:`capture_rule`.

Every session gets exactly one verdict.  Rules propose verdict candidates
(``Finding.verdict``); :func:`diagnose` keeps the one whose code comes first
in :data:`PRECEDENCE` and files every other finding as a note.  When no rule
proposes a verdict, a fallback says so honestly (``capture-incomplete``: the
capture does not hold enough to classify the session).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pcapsmtp.timeline import Session

#: The verdict table of the design notes, in its order.  The JSON contract: stable codes.
VERDICT_CODES: tuple[str, ...] = (
    "ok",
    "ok-no-mail",
    "smtp-deferred",
    "smtp-rejected",
    "pipelining-violation",
    "starttls-refused",
    "starttls-not-followed",
    "middlebox-rewrite",
    "tls-handshake-alert",
    "tls-closed-during-handshake",
    "tls-client-silent-after-handshake",
    "tls-server-silent-after-handshake",
    "tcp-no-answer",
    "tcp-refused",
    "tcp-reset",
    "pmtu-blackhole",
    "timeout",
    "capture-incomplete",
)

#: Which verdict candidate wins when several rules propose one, most telling first.
#:
#: The principle: a *cause* beats its *consequences*, and anything proven beats
#: "the capture cannot tell".
#:
#: * ``middlebox-rewrite`` first: a mangled command explains the 500 / sync
#:   error / reset that followed, which would otherwise read as the server's fault.
#: * ``tcp-refused`` / ``tcp-no-answer``: nothing else can have happened.
#: * ``pmtu-blackhole``: lost full-size segments explain the timeout or reset after them.
#: * TLS handshake failures, then silence after the handshake: once TLS began, plaintext
#:   SMTP rules have nothing more to see, and an alert says more than a bare close.
#: * ``starttls-refused`` / ``starttls-not-followed``: the reason a client gave up.
#: * ``pipelining-violation``: the client's early talk explains the 5xx (sync error) after it.
#: * ``smtp-rejected`` / ``smtp-deferred``: the server said why, in words.
#: * ``timeout`` before ``tcp-reset``: a long silence explains the RST that ended it.
#: * ``ok`` / ``ok-no-mail``: only proposed when the dialogue ended in order.
#: * ``capture-incomplete`` last: only when nothing more specific can be said.
PRECEDENCE: tuple[str, ...] = (
    "middlebox-rewrite",
    "tcp-refused",
    "tcp-no-answer",
    "pmtu-blackhole",
    "tls-handshake-alert",
    "tls-closed-during-handshake",
    "tls-client-silent-after-handshake",
    "tls-server-silent-after-handshake",
    "starttls-refused",
    "starttls-not-followed",
    "pipelining-violation",
    "smtp-rejected",
    "smtp-deferred",
    "timeout",
    "tcp-reset",
    "ok",
    "ok-no-mail",
    "capture-incomplete",
)

assert sorted(PRECEDENCE) == sorted(VERDICT_CODES), "every verdict code needs a rank"

SEVERITIES = ("error", "warning", "info")


@dataclass(slots=True)
class Evidence:
    """One fact from the capture a finding rests on: where to look in Wireshark."""

    frame: int | None
    time: float | None  # absolute capture time (seconds since the epoch)
    what: str

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "time": self.time, "what": self.what}


@dataclass
class Finding:
    """What a rule concluded, phrased so it can be sent to the other side's admin.

    ``summary`` states what the capture proves; ``cannot_prove`` what it cannot
    (so nobody over-reads it); ``next_step`` what to capture or check next.
    ``verdict`` marks a candidate for the session's one verdict (its ``code`` is
    then one of VERDICT_CODES); other findings are notes with their own codes.
    """

    code: str
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    cannot_prove: str = ""
    next_step: str = ""
    verdict: bool = False
    severity: str = "info"  # "error" | "warning" | "info"
    sessions: list[int] = field(default_factory=list)  # cross-session findings: ids linked

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "summary": self.summary,
            "evidence": [e.to_dict() for e in self.evidence],
            "cannot_prove": self.cannot_prove,
            "next_step": self.next_step,
            "severity": self.severity,
        }
        if self.sessions:
            out["sessions"] = list(self.sessions)
        return out


SessionRule = Callable[[Session], "Finding | list[Finding] | None"]
CaptureRule = Callable[[list[Session]], "Finding | list[Finding] | None"]

RULES: list[SessionRule] = []
CAPTURE_RULES: list[CaptureRule] = []


def rule(fn: SessionRule) -> SessionRule:
    """Register a per-session rule (decorator)."""
    RULES.append(fn)
    return fn


def needs(*kinds: str) -> Callable[[SessionRule], SessionRule]:
    """Declare that a rule can only find something when the timeline holds an event of
    one of ``kinds``; :func:`run_rules` then skips it for other sessions.

    A promise about the rule's code (it returns None or [] without such an event),
    which makes most rules free for most sessions: every rule otherwise asks its first
    questions of every timeline.  Measured on the 100k benchmark's 2,421 sessions:
    diagnose 137 -> 129 us a session (CPU, in-process).
    """
    wanted = frozenset(kinds)

    def mark(fn: SessionRule) -> SessionRule:
        fn.needs = wanted  # type: ignore[attr-defined]
        return fn
    return mark


def capture_rule(fn: CaptureRule) -> CaptureRule:
    """Register a cross-session rule (decorator): runs once per capture."""
    CAPTURE_RULES.append(fn)
    return fn


_loaded = False


def load_rules() -> None:
    """Import every rule module of this package once (helpers start with ``_``).

    Discovery instead of a list, so that a new rule module needs no edit here.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def _as_list(result: Finding | list[Finding] | None) -> list[Finding]:
    if result is None:
        return []
    if isinstance(result, Finding):
        return [result]
    return list(result)


def _rank(code: str) -> int:
    try:
        return PRECEDENCE.index(code)
    except ValueError:
        return len(PRECEDENCE)


def run_rules(session: Session, rules: Iterable[SessionRule] | None = None,
              strict: bool = False) -> list[Finding]:
    """Every finding the rules make about one session, in rule order.

    A rule that raises must not cost the user the rest of the diagnosis: its
    failure becomes an ``internal-error`` note (``strict`` re-raises, for tests).
    """
    load_rules()
    findings: list[Finding] = []
    # a set: frozenset.isdisjoint walks a keys view, but probes a set (the test below
    # is made ~30 times a session)
    present = set(session.kinds())
    # the rules' shared questions are answered once for all of them (_common.shared)
    session._memo = {}
    try:
        for fn in RULES if rules is None else rules:
            wanted = getattr(fn, "needs", None)
            if wanted is not None and wanted.isdisjoint(present):
                continue  # nothing it could find here (see needs)
            try:
                result = fn(session)
                if result is not None:  # most rules find nothing in most sessions
                    findings.extend(_as_list(result))
            except Exception as exc:  # noqa: BLE001 - one broken rule must not sink the report
                if strict:
                    raise
                findings.append(Finding(
                    code="internal-error",
                    summary=f"rule {fn.__module__}.{fn.__name__} failed: {exc!r}",
                    severity="warning",
                    next_step="please report this with the capture to the pcapsmtp authors",
                ))
    finally:
        session._memo = None
    return findings


def choose_verdict(findings: list[Finding]) -> tuple[Finding | None, list[Finding]]:
    """The winning verdict candidate by :data:`PRECEDENCE`, and everything else.

    Losing candidates stay as notes with ``verdict`` cleared: a 500 that a
    rewritten command provoked is still worth seeing below the rewrite.
    """
    candidates = [f for f in findings if f.verdict and f.code in VERDICT_CODES]
    if not candidates:
        return None, [f for f in findings if not f.verdict]
    best = min(candidates, key=lambda f: _rank(f.code))  # min is stable: first rule wins ties
    notes = []
    for f in findings:
        if f is best:
            continue
        f.verdict = False
        notes.append(f)
    return best, notes


def fallback(session: Session) -> Finding:
    """The verdict when no rule could classify the session: say so, do not guess."""
    from pcapsmtp.rules._common import ev, rel  # local: _common imports this module

    last = session.events[-1] if session.events else None
    evidence = [ev(last, f"last event: {last.text}")] if last else []
    return Finding(
        code="capture-incomplete",
        summary=(
            f"No rule recognises how this session ended: {len(session.events)} events over "
            f"{rel(session, session.last_time):.1f} s, none of them a clear outcome."
        ),
        evidence=evidence,
        cannot_prove="what the two sides intended; the capture holds no reply, close or "
        "error that decides it",
        next_step="look at the dialogue below; capture longer, and on both sides, "
        "with `tcpdump -s 0`",
        verdict=True,
        severity="warning",
    )


def diagnose(session: Session, strict: bool = False) -> None:
    """Run every rule on ``session``; set ``session.verdict`` (one Finding) and ``notes``."""
    findings = run_rules(session, strict=strict)
    best, notes = choose_verdict(findings)
    if best is None:
        best = fallback(session)
    session.verdict = best
    session.notes = notes


class SessionList(list):  # type: ignore[type-arg]
    """The sessions as diagnose_capture hands them to the capture rules, with a memo for
    that call: several rules ask the same question of all of them (which are NAT copies,
    the sessions grouped by client and server), 15-35 ms each on 7,204 sessions in the
    parent's serial tail.  See :func:`pcapsmtp.rules._common.shared`, which keeps a
    session's answers the same way (``Session._memo``)."""

    __slots__ = ("_memo",)

    def __init__(self, sessions: Iterable[Session]) -> None:
        super().__init__(sessions)
        self._memo: dict[Any, Any] = {}


def diagnose_capture(sessions: list[Session], strict: bool = False) -> list[Finding]:
    """Cross-session patterns (bans, retry storms, proxies): each reported once.

    Call after :func:`diagnose` on every session: these rules read verdicts.
    """
    load_rules()
    out: list[Finding] = []
    sessions = SessionList(sessions)  # one memo for this call (see SessionList)
    for fn in CAPTURE_RULES:
        try:
            out.extend(_as_list(fn(sessions)))
        except Exception as exc:  # noqa: BLE001
            if strict:
                raise
            out.append(Finding(code="internal-error",
                               summary=f"capture rule {fn.__name__} failed: {exc!r}",
                               severity="warning"))
    return out
