"""The session spool: finished sessions out of memory, back in id order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapsmtp import store as store_mod
from pcapsmtp.store import SessionStore
from pcapsmtp.timeline import Event, Session

ROOT = Path(__file__).resolve().parent.parent


def session(sid: int, events: int = 50) -> Session:
    s = Session(id=sid, client=("192.0.2.1", 40000 + sid), server=("198.51.100.2", 25),
                ip_version=4, first_time=float(sid), last_time=sid + 1.0, first_frame=sid,
                last_frame=sid + 10)
    s.events = [Event(float(sid), sid, "S", "smtp-reply", "250-mx",
                      fields={"answers": "EHLO", "code": 250, "capabilities": ["X" * 100]})]
    s.events += [Event(float(sid), sid, "C", "smtp-command", "NOOP " + "y" * 200)
                 for _ in range(events)]
    return s


def test_sessions_come_back_whole_in_id_order(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(store_mod, "SPOOL_IN_MEMORY", 4096)
    st = SessionStore()
    for sid in (3, 1, 2):
        st.add(session(sid))
    st.seal()
    assert [s.id for s in st] == [1, 2, 3]
    assert len(st[0].events) == 51 and st[2].events[1].text.startswith("NOOP ")
    assert st._spool._rolled  # spilled to a temporary file past the in-memory size


def test_stubs_keep_only_what_cross_session_rules_read() -> None:
    st = SessionStore()
    st.add(session(1))
    st.seal()
    (stub,) = st.stubs
    assert [e.kind for e in stub.events] == ["smtp-reply"]
    assert stub.client == ("192.0.2.1", 40001)


def test_filter_and_map_are_lazy_views() -> None:
    st = SessionStore()
    for sid in range(1, 6):
        st.add(session(sid, events=1))
    st.seal()
    loads = []
    real_load = st.load

    def counting(sid: int) -> Session:
        loads.append(sid)
        return real_load(sid)

    st.load = counting  # type: ignore[method-assign]
    view = st.filter(lambda s: s.id % 2 == 1).map(lambda s: (setattr(s, "packets", 99), s)[1])
    assert loads == [] and len(view) == 3
    assert [(s.id, s.packets) for s in view] == [(1, 99), (3, 99), (5, 99)]
    assert loads == [1, 3, 5]


def test_verdicts_of_a_view_come_from_the_stubs_and_are_only_id_and_code() -> None:
    """Counting verdicts loads no session; and what it returns cannot carry the stubs'
    (unredacted) addresses into a report made from a redacting view."""
    from pcapsmtp.rules import Finding
    from pcapsmtp.store import verdicts

    st = SessionStore()
    for sid in range(1, 4):
        s = session(sid, events=1)
        s.verdict = Finding(code="ok" if sid != 2 else "smtp-rejected", summary="x")
        st.add(s)
    st.add(session(4, events=1))  # no verdict
    st.seal()
    st.load = lambda sid: pytest.fail("verdicts() loaded a session")  # type: ignore
    view = st.filter(lambda s: True).map(lambda s: s)
    assert verdicts(view) == [(1, "ok"), (2, "smtp-rejected"), (3, "ok"), (4, "-")]
    assert verdicts(st) == verdicts(view)


def test_render_on_add_keeps_renderings_with_the_final_id() -> None:
    def parts(s: Session) -> tuple[str, str]:
        return "<", f">{len(s.events)}"

    st = SessionStore(render=("demo", parts))
    st.add(session(7, events=2))
    st.add(session(5, events=1))
    st.seal()
    assert list(store_mod.rendered(st, "demo")) == ["<5>2", "<7>3"]
    assert store_mod.rendered(st, "other") is None
    assert store_mod.rendered(st.map(lambda s: s), "demo") is None  # a transform: not plain
    with pytest.raises(RuntimeError):
        st.load(5)
    assert [s.id for s in st.stubs] == [5, 7]  # stubs stay, for the summary and rules


def test_stubs_know_who_closed() -> None:
    s = session(1, events=1)
    s.events.append(Event(9.0, 20, "C", "tcp-fin", "FIN"))
    s.events.append(Event(9.5, 21, "S", "tcp-rst", "RST"))
    st = SessionStore()
    st.add(s)
    st.seal()
    assert [e.kind for e in st.stubs[0].events] == ["smtp-reply", "tcp-fin"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_analyze_render_parameter_gives_the_same_report(jobs: int) -> None:
    """analyze(render=...) hands the rendering to the stores it makes (the workers' and
    the parent's, when sharded); the report is the one rendered from loaded sessions."""
    from pathlib import Path

    from pcapsmtp.analyze import analyze
    from pcapsmtp.render import json as json_report
    from pcapsmtp.render import text

    path = str(Path(__file__).parent.parent / "samples" / "ban-after-failure.pcap")
    plain = analyze(path, jobs=jobs)
    assert plain.sessions._render is None  # type: ignore[attr-defined]
    as_json = analyze(path, jobs=jobs, render=json_report.ON_ADD)
    assert json_report.render(as_json) == json_report.render(plain)
    as_text = analyze(path, jobs=jobs, render=text.on_add(timelines=True))
    assert store_mod.rendered(as_text.sessions, "text") is not None
    assert text.render(as_text) == text.render(plain)


def test_learnt_values_follow_their_sessions_through_a_merge(tmp_path) -> None:  # noqa: ANN001
    """Workers' stores hand back what ``learn`` kept of each session; the merged store
    gives it back by final id (first frame order), whichever worker and order it came in."""
    import tempfile

    def learn(s: Session) -> tuple[str, ...]:
        return (f"first frame {s.first_frame}",)

    parts = []
    for frames in ((30, 10), (20, 40)):  # as workers finish them: not in order
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        worker = SessionStore(spool, learn=learn)
        for frame in frames:
            worker.add(session(frame, events=1))
        parts.append((spool, worker.entries()))
    merged = SessionStore(learn=learn)
    merged.merge(parts)
    merged.seal()
    assert store_mod.learnt(merged, learn) == [(f"first frame {f}",) for f in (10, 20, 30, 40)]
    assert store_mod.learnt(merged.filter(lambda s: s.id > 2), learn) == [
        ("first frame 30",), ("first frame 40",)]
    assert store_mod.learnt(merged, lambda s: ()) is None  # another function's: not these
    assert store_mod.learnt(merged.map(lambda s: s), learn) is None


def test_report_stubs_keep_what_the_summaries_read() -> None:
    from pcapsmtp.render.common import ending_text, verdict_code
    from pcapsmtp.rules import Finding

    s = session(1, events=2)
    s.events.append(Event(2.0, 12, "S", "tcp-fin", "FIN", fields={"offset": 7}))
    s.verdict = Finding(code="smtp-rejected", summary="names 192.0.2.1")
    light = store_mod.report_stub(s)
    for read in (ending_text, verdict_code, lambda x: (x.id, x.client, x.server, x.packets)):
        assert read(light) == read(s) == read(store_mod.stub(s))
    assert "192.0.2.1" not in repr(light.verdict) and len(light.events) == 1


def _stub_events_by_a_pass(s: Session) -> list[Event]:
    """What store.stub keeps, found as it was before it read the kind index: one pass."""
    ehlo = close = proxy = None
    for e in s.events:
        if ehlo is None and e.kind == "smtp-reply" and e.fields.get("answers") == "EHLO":
            ehlo = e
        elif close is None and e.kind in ("tcp-fin", "tcp-rst"):
            close = e
        elif proxy is None and e.kind == "proxy-header":
            proxy = e
        if ehlo is not None and close is not None:
            break
    return [e for e in (proxy, ehlo, close) if e is not None]


@pytest.mark.parametrize("kinds", [
    ["smtp-reply:EHLO", "tcp-fin"],
    ["tcp-rst", "smtp-reply:HELO", "smtp-reply:EHLO", "tcp-fin", "smtp-reply:EHLO"],
    ["tcp-fin", "tcp-rst"],
    ["tcp-rst", "tcp-fin", "smtp-reply:EHLO"],
    ["smtp-command"],
    [],
    ["proxy-header", "smtp-reply:EHLO", "tcp-fin"],
    ["smtp-reply:EHLO", "tcp-rst", "proxy-header"],  # found after both: not kept
    ["smtp-reply:EHLO", "proxy-header", "tcp-rst", "proxy-header"],
])
def test_stub_keeps_the_first_ehlo_reply_close_and_proxy_header(kinds: list[str]) -> None:
    s = session(1, events=0)
    s.events = []
    for i, k in enumerate(kinds):
        kind, _, answers = k.partition(":")
        s.events.append(Event(float(i), i + 1, "S", kind, k,
                              fields={"answers": answers} if answers else {}))
    s.of_kind("")  # the index the rules leave behind
    kept, expected = store_mod.stub(s).events, _stub_events_by_a_pass(s)
    assert [(e.frame, e.kind) for e in kept] == [(e.frame, e.kind) for e in expected]
    for a, b in zip(kept, expected, strict=True):
        if b.kind == "smtp-reply":  # the EHLO reply: what the cross-session rules read
            assert (a.text, a.fields) == ("", {"answers": "EHLO"})
        else:
            assert a is b


@pytest.mark.parametrize("name", ["dnat-any.pcap", "ban-after-failure.pcap",
                                  "haproxy-proxy.pcap", "starttls-ok.pcap"])
def test_stubs_give_the_cross_session_rules_what_full_sessions_do(name: str) -> None:
    """The parent runs the capture rules on stubs (the workers' sessions are not loaded
    again): the same findings as on the full sessions, though a stub keeps only the
    verdict's code and the EHLO reply's code and keywords."""
    from pcapsmtp.analyze import Pipeline
    from pcapsmtp.capture import open_capture
    from pcapsmtp.flows import Selection
    from pcapsmtp.rules import diagnose_capture

    pipeline = Pipeline(Selection())
    with open_capture(str(ROOT / "samples" / name)) as reader:
        for frame in reader:
            pipeline.feed(frame)
    full = pipeline.close()
    stubs = [store_mod.stub(s) for s in full]
    assert all(type(st.verdict) is store_mod.VerdictCode for st in stubs)
    assert diagnose_capture(stubs, strict=True) == diagnose_capture(full, strict=True)


def test_stubs_keep_the_ehlo_keywords_that_tell_a_proxy() -> None:
    """ehlo-differs, found on stubs: the keywords survive the stub (the lab has no such
    capture; two timelines to one server, one answered without STARTTLS)."""
    from pcapsmtp.rules import diagnose, diagnose_capture
    from tests.timeline_builders import SessionBuilder

    a = SessionBuilder(session_id=1).handshake().banner().ehlo().quit().fin("C").build()
    b = (SessionBuilder(client=("203.0.113.41", 40000), start=1_700_000_100.0, session_id=2)
         .handshake().banner().ehlo(caps=("PIPELINING", "8BITMIME")).quit().fin("C").build())
    for s in (a, b):
        diagnose(s)
    full = diagnose_capture([a, b], strict=True)
    assert [f.code for f in full] == ["ehlo-differs"]
    assert diagnose_capture([store_mod.stub(a), store_mod.stub(b)], strict=True) == full
