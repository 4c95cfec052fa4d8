"""The speed-ups of the rules change no finding: answers shared between the rules of one
diagnosis (rules._common.shared), and the cheap tests some rules ask first."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapsmtp import rules
from pcapsmtp.analyze import analyze
from pcapsmtp.rules import _common, middlebox, tcp
from pcapsmtp.timeline import Session
from tests.timeline_builders import SessionBuilder

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.pcap"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_each_rule_alone_finds_what_it_finds_in_run_rules(path: Path) -> None:
    """Outside run_rules nothing is shared: every rule asked on its own, computing every
    answer itself, says what it says among the others."""
    rules.load_rules()
    for session in analyze(str(path), jobs=1).sessions:
        together = rules.run_rules(session, strict=True)
        assert session._memo is None  # cleared: the session may change after diagnosis
        alone = []
        for fn in rules.RULES:
            alone.extend(rules._as_list(fn(session)))
        assert together == alone, session.id


def test_a_shared_list_is_a_copy() -> None:
    """A rule that changes the list a shared question returned changes no other rule's."""
    s = (SessionBuilder().handshake().banner(220, "mx ESMTP").ehlo().message().quit()
         .fin("C").build())
    seen: list[int] = []

    def greedy(session: Session) -> None:
        pairs = _common.message_pairs(session)
        seen.append(len(pairs))
        pairs.clear()

    rules.run_rules(s, [greedy, greedy], strict=True)
    assert seen == [1, 1]


def test_shared_answers_are_forgotten_after_the_diagnosis() -> None:
    """A session changed after run_rules is judged afresh (not by the last run's answers)."""
    s = SessionBuilder().handshake().banner(220, "mx ESMTP").ehlo().quit().fin("C").build()
    seen: list[bool] = []

    def probe(session: Session) -> None:
        seen.append(_common.quit_answered(session) is not None)

    rules.run_rules(s, [probe], strict=True)
    for e in s.events:
        if e.kind == "smtp-reply" and e.fields.get("answers") == "QUIT":
            e.fields["code"] = 500  # the same number of events, another answer
    rules.run_rules(s, [probe], strict=True)
    assert seen == [True, False]


def test_replies_to_keeps_the_timeline_order() -> None:
    s = (SessionBuilder().handshake().banner(220, "mx ESMTP").ehlo()
         .cmd("RSET").reply(250, "ok").cmd("RSET").reply(421, "bye").fin("S").build())
    want = [e for e in s.events if e.kind == "smtp-reply" and e.fields["answers"] == "RSET"]
    assert _common.replies_to(s, "RSET") == want
    assert [r.fields["code"] for r in want] == [250, 421]
    assert _common.replies_to(s, "DATA") == []
    assert _common.greeting(s) is s.events[2]


@pytest.mark.parametrize(("banner", "masked"), [
    ("****", True),  # four stars, all of it: the fewest that count
    ("*** ", False),  # three stars
    ("mx **** ESMTP", False),  # four stars, fewer than half of what is visible
    ("mx.example ******* ****", True),
    ("** ** a b", True),  # spaces do not count: 4 of 6 visible
])
def test_asterisk_banner_threshold(banner: str, masked: bool) -> None:
    """The star count asked before the visible characters are listed decides as before."""
    s = SessionBuilder().handshake().banner(220, banner).ehlo().quit().fin("C").build()
    assert (middlebox.asterisk_banner(s) is not None) == masked


@pytest.mark.parametrize(("wait", "timeout"), [(4.9, False), (5.0, True), (30.0, True)])
def test_no_greeting_wait_threshold(wait: float, timeout: bool) -> None:
    """The wait, now asked before the pass over the timeline, decides as before."""
    s = SessionBuilder(step=0.0).handshake().wait(wait).fin("C").build()
    found = tcp.no_greeting(s)
    assert (found is not None) == timeout
    if timeout:
        assert found.code == "timeout"


def test_no_greeting_not_claimed_after_a_greeting() -> None:
    s = SessionBuilder().handshake().banner(220, "mx ESMTP").wait(30).fin("C").build()
    assert tcp.no_greeting(s) is None


@pytest.mark.parametrize("wanted", [("tcp-fin", "tcp-rst"), ("tcp-rst", "tcp-fin"),
                                    ("tcp-fin", "tcp-fin"), ("tcp-syn", "tls-alert"),
                                    ("tls-alert", "note"), ("smtp-reply", "smtp-command")])
def test_of_kind_with_several_kinds_keeps_the_timeline_order(wanted: tuple[str, ...]) -> None:
    s = (SessionBuilder().handshake().banner(220, "mx ESMTP").ehlo().quit().rst("C")
         .fin("S").build())
    assert s.of_kind(*wanted) == [e for e in s.events if e.kind in wanted]


@pytest.mark.parametrize("name", ["dnat-any.pcap", "ban-after-failure.pcap", "plain-ok.pcap"])
def test_capture_rules_share_answers_within_one_call(name: str) -> None:
    """diagnose_capture asks which sessions are NAT copies, and groups them by client and
    server, once for all its rules (rules._common.shared); each rule given a plain
    list computes the same findings itself."""
    rules.load_rules()
    stubs = list(analyze(str(ROOT / "samples" / name), jobs=1).sessions.stubs)
    alone = [f for fn in rules.CAPTURE_RULES for f in rules._as_list(fn(list(stubs)))]
    assert rules.diagnose_capture(stubs, strict=True) == alone
    shared = rules.SessionList(stubs)
    for fn in rules.CAPTURE_RULES:
        fn(shared)
    assert sorted(q.__name__ for q in shared._memo) == ["_pairs", "nat_copies"]
    if name == "dnat-any.pcap":
        assert any(f.code == "nat-copy" for f in alone)
    if name == "ban-after-failure.pcap":
        assert any(f.code == "ban-after-failure" for f in alone)
