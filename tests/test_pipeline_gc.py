"""The analysis pauses the cyclic garbage collector, which is only safe because the
pipeline makes no reference cycles: both are held here."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcapsmtp.analyze import Pipeline, analyze, collector_paused, run_frames
from pcapsmtp.capture import Frame, open_capture
from pcapsmtp.flows import Selection
from pcapsmtp.render import json as json_report
from pcapsmtp.render import text

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE = SAMPLES / "tls-client-silent.pcap"


def watched(frames: Iterator[Frame], seen: list[bool]) -> Iterator[Frame]:
    for frame in frames:
        seen.append(gc.isenabled())
        yield frame


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("enabled", [True, False], ids=["resumed", "left-off"])
def test_paused_while_feeding_then_as_it_was(enabled: bool, collector: None) -> None:
    """Paused while frames are fed; resumed after, or left off when it was off."""
    (gc.enable if enabled else gc.disable)()
    seen: list[bool] = []
    with open_capture(str(SAMPLE)) as reader:
        run_frames(Pipeline(Selection()), watched(iter(reader), seen))
    assert seen and not any(seen)
    assert gc.isenabled() is enabled


def test_nested_pauses_resume_once_at_the_outermost_end(collector: None) -> None:
    gc.enable()
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()  # the inner block must not resume it
    assert gc.isenabled()


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.pcap")))
def test_analysis_and_reports_make_no_reference_cycles(sample: str, collector: None) -> None:
    """What the collector would have had to find: with it paused during the analysis,
    a cycle per session or per packet would be memory that only comes back afterwards
    (and never in a worker process, which keeps it paused until it exits).  Every cyclic
    object the analysis and both reports leave behind is counted: none is allowed."""
    path = str(SAMPLES / sample)
    analyze(path, jobs=1)  # first use: imports, caches, lazily built tables
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        del gc.garbage[:]
        result = analyze(path, jobs=1)
        text.render(result)
        json_report.render(result)
        del result
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        del gc.garbage[:]
    assert left == []
