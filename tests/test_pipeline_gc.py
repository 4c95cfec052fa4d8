"""run_frames raises the cyclic GC's thresholds while it feeds frames, then restores them."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

from pcapsmtp.analyze import _GC_THRESHOLDS, Pipeline, run_frames
from pcapsmtp.capture import Frame, open_capture
from pcapsmtp.flows import Selection

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "tls-client-silent.pcap"


def watched(frames: Iterator[Frame], seen: list[tuple[int, int, int]]) -> Iterator[Frame]:
    for frame in frames:
        seen.append(gc.get_threshold())
        yield frame


def test_thresholds_raised_while_feeding_and_restored() -> None:
    old = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    try:
        gc.set_threshold(700, 10, 10)
        with open_capture(str(SAMPLE)) as reader:
            run_frames(Pipeline(Selection()), watched(iter(reader), seen))
        assert seen and all(t == _GC_THRESHOLDS for t in seen)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*old)


def test_a_disabled_collector_is_left_alone() -> None:
    old = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    try:
        gc.set_threshold(0)
        with open_capture(str(SAMPLE)) as reader:
            run_frames(Pipeline(Selection()), watched(iter(reader), seen))
        assert seen and all(t[0] == 0 for t in seen)
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*old)
