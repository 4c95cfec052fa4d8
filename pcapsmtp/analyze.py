"""The pipeline: capture -> packets -> flows -> timelines -> diagnosis.

One pass over the frames, in order, with memory bounded by the sessions open
at once: a session is finished, diagnosed and handed to ``on_session`` soon
after it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pcapsmtp import rules
from pcapsmtp.capture import CaptureInfo, Frame, open_capture
from pcapsmtp.dissect import SessionBuilder
from pcapsmtp.flows import FlowTable, Selection
from pcapsmtp.packets import Decoder, DecodeStats
from pcapsmtp.store import SessionStore
from pcapsmtp.timeline import Session

# A closed connection is finished this long (capture time) after its close, so
# that the last ACKs and stray RSTs still land in it.
CLOSE_GRACE = 5.0
# How often (in frames) closed connections are swept out.
SWEEP_EVERY = 2048


@dataclass
class Analysis:
    capture: CaptureInfo
    decode: DecodeStats
    selection: Selection
    # A list, or a SessionStore (sessions spilled to a spool, loaded as iterated).
    sessions: Sequence[Session] = field(default_factory=list)
    findings: list[Any] = field(default_factory=list)  # capture-wide rules.Finding
    engine: str = "native"


class Pipeline:
    """Feeds frames through flows and builders; finished sessions come out diagnosed."""

    def __init__(self, selection: Selection,
                 on_session: Callable[[Session], None] | None = None,
                 keep: bool = True) -> None:
        self.selection = selection
        self.decoder = Decoder()
        self.on_session = on_session
        self.keep = keep  # False: finished sessions only go to on_session (bounded memory)
        self.table = FlowTable(selection, self._new_builder)
        self.finished: list[Session] = []
        self._next_id = 1
        self._frames = 0
        self.now = 0.0

    def _new_builder(self, client: tuple[str, int], server: tuple[str, int],
                     first: Any) -> SessionBuilder:
        sid = self._next_id
        self._next_id += 1
        implicit = server[1] in self.selection.implicit_tls_ports
        return SessionBuilder(sid, client, server, first, implicit)

    def feed(self, frame: Frame) -> None:
        self._frames += 1
        self.now = frame.time
        seg = self.decoder.decode(frame)
        if seg is not None:
            for old in self.table.add(seg):
                self._finish(old, end_of_capture=False)
        if self._frames % SWEEP_EVERY == 0:
            self.sweep()

    def sweep(self, idle: float | None = None) -> None:
        """Finish connections closed a while ago (and, in live mode, idle ones)."""
        for b in self.table.pop_closed(self.now, CLOSE_GRACE):
            self._finish(b, end_of_capture=False)
        if idle is not None:
            for b in self.table.pop_idle(self.now, idle):
                self._finish(b, end_of_capture=True)

    def close(self) -> list[Session]:
        """End of input: finish everything; sessions in order of their first packet."""
        self.decoder.finish()
        for b in self.table.drain():
            self._finish(b, end_of_capture=True)
        self.finished.sort(key=lambda s: s.id)
        return self.finished

    def _finish(self, builder: Any, end_of_capture: bool) -> None:
        session = builder.finish(end_of_capture)
        rules.diagnose(session)
        if self.keep:
            self.finished.append(session)
        if self.on_session:
            self.on_session(session)


def analyze(path: str, selection: Selection | None = None,
            progress: Callable[[int], None] | None = None) -> Analysis:
    """Read a whole capture and diagnose every SMTP session in it."""
    selection = selection or Selection()
    store = SessionStore()
    pipeline = Pipeline(selection, on_session=store.add, keep=False)
    with open_capture(path) as reader:
        run_frames(pipeline, reader, progress)
        info = reader.info
    pipeline.close()
    store.seal()
    result = Analysis(capture=info, decode=pipeline.decoder.stats, selection=selection,
                      sessions=store)
    result.findings = rules.diagnose_capture(store.stubs)
    return result


def run_frames(pipeline: Pipeline, frames: Iterable[Frame],
               progress: Callable[[int], None] | None = None) -> None:
    """The hot loop; ``progress`` gets the frame count every 65536 frames."""
    feed = pipeline.feed
    if progress is None:
        for frame in frames:
            feed(frame)
        return
    for n, frame in enumerate(frames, 1):
        feed(frame)
        if not n & 0xFFFF:
            progress(n)
