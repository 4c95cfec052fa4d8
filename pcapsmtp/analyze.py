"""The pipeline: capture -> packets -> flows -> timelines -> diagnosis.

One pass over the frames, in order, with memory bounded by the sessions open
at once: a session is finished, diagnosed and handed to ``on_session`` soon
after it closes.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import multiprocessing.connection
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pcapsmtp import rules
from pcapsmtp.capture import Batch, CaptureInfo, CaptureReader, Frame, open_capture
from pcapsmtp.dissect import SessionBuilder
from pcapsmtp.flows import FlowTable, Selection
from pcapsmtp.packets import Decoder, DecodeStats, Segment, TooBig
from pcapsmtp.store import LearnOnAdd, RenderOnAdd, SessionStore, default_jobs
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
                 keep: bool = True, shard: tuple[int, int] | None = None) -> None:
        self.selection = selection
        # (index, count): only build connections whose 4-tuple hashes to ``index``;
        # session ids are then the number of the frame that opened them (see analyze).
        self.shard = shard
        self.decoder = Decoder()
        self.decoder.shard = shard  # it drops other shards' segments before building them
        self.on_session = on_session
        self.keep = keep  # False: finished sessions only go to on_session (bounded memory)
        self.table = FlowTable(selection, self._new_builder)
        self.finished: list[Session] = []
        self._next_id = 1
        self._frames = 0
        self.now = 0.0

    def _new_builder(self, client: tuple[str, int], server: tuple[str, int],
                     first: Any) -> SessionBuilder:
        if self.shard is None:
            sid = self._next_id
            self._next_id += 1
        else:
            sid = self._frames  # one connection opens per frame at most: unique, in order
        implicit = server[1] in self.selection.implicit_tls_ports
        return SessionBuilder(sid, client, server, first, implicit)

    def feed(self, frame: Frame) -> None:
        self._frames = n = self._frames + 1
        self.now = frame.time
        seg = self.decoder.decode(frame)
        if seg is not None:
            self._route(seg)
        if not n % SWEEP_EVERY:
            self.sweep()

    def feed_batch(self, batch: Batch) -> None:
        """A batch of the C reader (``CaptureReader.batches``): its Segments routed, its
        Frames decoded here.  The same as feeding its frames one by one: a batch ends at
        the latest at a multiple of SWEEP_EVERY, where the sweep then runs, and frames of
        other shards' connections, skipped in C, change nothing else here."""
        items, number, time, decoded = batch
        self.decoder.count_fast(decoded)
        decode, add = self.decoder.decode, self.table.add
        for item in items:
            if type(item) is Segment:
                self._frames = item.frame  # the id of a session it opens (sharded)
                for old in add(item):  # a new connection on a reused 4-tuple (rare)
                    self._finish(old, end_of_capture=False)
            else:
                self._frames = item.number
                seg = decode(item)
                if seg is not None:
                    self._route(seg)
        self._frames = number
        self.now = time
        if not number % SWEEP_EVERY:
            self.sweep()

    def _route(self, seg: Segment | TooBig) -> None:
        if type(seg) is TooBig:  # an ICMP too-big about a connection (rare)
            self.table.add_too_big(seg)
        else:
            for old in self.table.add(seg):  # a new connection on a reused 4-tuple (rare)
                self._finish(old, end_of_capture=False)

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
        # No connection opens after the end; and the table's factory is our bound method,
        # a reference cycle that only the (paused) collector would free.
        self.table.factory = _no_more_connections
        self.finished.sort(key=lambda s: s.id)
        return self.finished

    def _finish(self, builder: Any, end_of_capture: bool) -> None:
        session = builder.finish(end_of_capture)
        rules.diagnose(session)
        if self.keep:
            self.finished.append(session)
        if self.on_session:
            self.on_session(session)


def _no_more_connections(*args: Any) -> Any:
    raise RuntimeError("the pipeline is closed: no connection can open")


# Below this file size one process is faster than several (each worker re-reads and
# re-decodes the whole file; forking and merging cost ~50 ms).
PARALLEL_MIN_BYTES = 4 * 2**20


def _jobs_for(path: str, jobs: int | None) -> int:
    """How many processes to analyse ``path`` with: one for stdin, pipes and small files."""
    if path == "-" or "fork" not in mp.get_all_start_methods() \
            or mp.current_process().daemon:  # a daemonic process may not have children
        return 1
    try:
        st = os.stat(path)
    except OSError:
        return 1  # open_capture reports the problem
    if not stat.S_ISREG(st.st_mode):
        return 1  # a FIFO or device can be read once only
    if jobs is None:
        return default_jobs() if st.st_size >= PARALLEL_MIN_BYTES else 1
    return max(1, jobs)


def analyze(path: str, selection: Selection | None = None,
            progress: Callable[[int], None] | None = None,
            jobs: int | None = None, render: RenderOnAdd | None = None,
            learn: LearnOnAdd | None = None) -> Analysis:
    """Read a whole capture and diagnose every SMTP session in it.

    ``jobs`` > 1 (default: :func:`default_jobs` for files of a few MB and more) shards
    the connections over worker processes; the result is the same as with one.
    ``render=(key, fn)``: the result's store keeps each session rendered by ``fn`` as it
    is finished instead of the session (see :class:`~pcapsmtp.store.SessionStore`);
    ``learn=fn``: it keeps ``fn(session)`` of each too (same place).
    """
    selection = selection or Selection()
    n = _jobs_for(path, jobs)
    if n > 1:
        with collector_paused():  # the workers inherit it; the parent unpickles much
            return _analyze_sharded(path, selection, progress, n, render, learn)
    store = SessionStore(render=render, learn=learn)
    with collector_paused():  # also while the stubs are sorted and the captures judged
        info, decode = _build(path, selection, store, progress)
        store.seal()
        return _result(info, decode, selection, store)


def _build(path: str, selection: Selection, store: SessionStore,
           progress: Callable[[int], None] | None,
           shard: tuple[int, int] | None = None) -> tuple[CaptureInfo, DecodeStats]:
    """Every frame of ``path`` through a pipeline whose finished sessions go to ``store``
    (only the connections of ``shard``, in a worker); the collector stays paused while
    the sessions still open at the end are finished too."""
    pipeline = Pipeline(selection, on_session=store.add, keep=False, shard=shard)
    with collector_paused():
        with open_capture(path) as reader:
            run_reader(pipeline, reader, progress)
            info = reader.info
        pipeline.close()
    return info, pipeline.decoder.stats


def _result(info: CaptureInfo, decode: DecodeStats, selection: Selection,
            store: SessionStore) -> Analysis:
    """The sealed store as an Analysis, with the cross-session rules run on its stubs."""
    result = Analysis(capture=info, decode=decode, selection=selection, sessions=store)
    result.findings = rules.diagnose_capture(store.stubs)
    return result


def _analyze_sharded(path: str, selection: Selection,
                     progress: Callable[[int], None] | None, count: int,
                     render: RenderOnAdd | None = None,
                     learn: LearnOnAdd | None = None) -> Analysis:
    """Each of ``count`` forked workers reads the whole file (reading and decoding are
    cheap next to building sessions), builds only the connections of its shard, and
    pickles them into its own spool file; the parent adopts the spools, numbers the
    sessions in order of their first packet and runs the cross-session rules.

    Measured with 2 CPUs (shared, +-20%): analyze() of the 100k-packet benchmark
    capture 4.5 s -> 2.6 s wall; `analyze --format json` of the 300k one, back to back
    with the single-process version: 22.6 s -> 11.9 s and 25.7 s -> 15.7 s wall, peak
    RSS 124 -> 85 MiB (each worker holds only its shard's open sessions).

    What a second worker costs on top (100k-packet benchmark, CPU, no rules): reading
    every frame again 0.12 s and decoding it 0.2 s (the other shards' frames are dropped
    in Decoder.decode before any address text or Segment is made), against 1.67 s for
    the whole pipeline in one process; two workers run concurrently also each use some
    10-30 % more CPU for the same work (shared caches on a shared machine).
    """
    ctx = mp.get_context("fork")  # workers inherit the progress callback and the spools
    _preload()
    spools = [tempfile.TemporaryFile() for _ in range(count)]  # noqa: SIM115
    workers = []
    for i in range(count):
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, daemon=True,
                           args=(path, selection, i, count, spools[i], sender,
                                 progress if i == 0 else None, render, learn))
        proc.start()
        sender.close()
        workers.append((proc, receiver))
    try:
        replies = _replies(workers)
    finally:
        for proc, _ in workers:
            proc.join()
    for reply in replies:
        if reply[0] == "error":
            for spool in spools:
                spool.close()
            raise reply[1]
    _, info, decode, _ = replies[0]
    store = SessionStore(render=render, learn=learn)
    store.merge([(spool, reply[3]) for spool, reply in zip(spools, replies, strict=True)])
    store.seal()
    return _result(info, decode, selection, store)


def _replies(workers: list[tuple[Any, Any]]) -> list[Any]:
    """Each worker's reply, in worker order, taken as each comes: the parent unpickles the
    first finisher's stubs (0.06 s for half of the 300k benchmark's) while the others
    still work, not after the slowest."""
    replies: list[Any] = [None] * len(workers)
    waiting = {receiver: i for i, (_, receiver) in enumerate(workers)}
    while waiting:
        for receiver in mp.connection.wait(list(waiting)):
            i = waiting.pop(receiver)
            try:
                replies[i] = receiver.recv()
            except EOFError:
                proc = workers[i][0]
                proc.join()
                replies[i] = ("error", RuntimeError(
                    f"worker process {proc.pid} died (exit status {proc.exitcode})"))
            receiver.close()
    return replies


def _preload() -> None:
    """Import in the parent, once, what the pipeline would import lazily in every worker
    (the rule modules, and cryptography for certificates; 0.065 s CPU per worker)."""
    rules.load_rules()
    import cryptography.hazmat.primitives.asymmetric  # noqa: F401
    import cryptography.x509  # noqa: F401


def _worker(path: str, selection: Selection, index: int, count: int, spool: Any,
            conn: Any, progress: Callable[[int], None] | None,
            render: RenderOnAdd | None = None, learn: LearnOnAdd | None = None) -> None:
    """One shard's sessions into ``spool``; (capture info, decode stats, entries) to the
    parent through ``conn``, or the exception that stopped it."""
    try:
        # The collector was paused when the parent forked (analyze), and stays so for the
        # worker's life: it never scans the parent's objects, nor touches their pages
        # (which copy-on-write would then duplicate).
        store = SessionStore(spool, render, learn)
        info, decode = _build(path, selection, store, progress, shard=(index, count))
        conn.send(("ok", info, decode, store.entries()))
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
        try:
            conn.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def run_frames(pipeline: Pipeline, frames: Iterable[Frame],
               progress: Callable[[int], None] | None = None) -> None:
    """The hot loop; ``progress`` gets the frame count every 65536 frames."""
    feed = pipeline.feed
    with collector_paused():
        if progress is None:
            for frame in frames:
                feed(frame)
            return
        for n, frame in enumerate(frames, 1):
            feed(frame)
            if not n & 0xFFFF:
                progress(n)


def run_reader(pipeline: Pipeline, reader: CaptureReader,
               progress: Callable[[int], None] | None = None) -> None:
    """Every frame of ``reader`` through ``pipeline``: in batches from the C reader where
    it can read the capture, else frame by frame."""
    batches = reader.batches(pipeline.decoder.fast_path(SWEEP_EVERY))
    if batches is None:
        run_frames(pipeline, reader, progress)
    else:
        run_batches(pipeline, batches, progress)


def run_batches(pipeline: Pipeline, batches: Iterable[Batch],
                progress: Callable[[int], None] | None = None) -> None:
    """``run_frames`` for the C reader's batches (a batch never spans a multiple of
    SWEEP_EVERY, so ``progress`` is called at the same frame counts)."""
    feed = pipeline.feed_batch
    shown = 0
    with collector_paused():
        for batch in batches:
            feed(batch)
            if progress is not None and batch[1] >> 16 != shown:
                shown = batch[1] >> 16
                progress(batch[1])


class collector_paused:
    """Pause the cyclic garbage collector for a block, then resume it (left alone when
    it is off already; nested blocks resume it once, at the outermost end).

    The pipeline makes no reference cycles, per packet or per session (tests/
    test_pipeline_gc.py holds every sample to that), so what it frees goes by reference
    counting and a collection can only scan live objects for nothing: the events of the
    open sessions, the stubs.  Measured on the 300k-packet benchmark, 'analyze --format
    json', with the thresholds raised to (100000, 50, 10), the previous compromise: each
    of the two workers spent 0.11-0.18 s in its one collection (100k young objects), the
    parent 0.065 s in two while it unpickled the workers' stubs (serial time), and '--jobs
    1' 0.27 s in 34.  The default (700, 10, 10) cost the 100k benchmark 0.30 s of 2.8 s.
    Cycles made meanwhile (none by the pipeline) are collected after the block.
    """

    def __enter__(self) -> None:
        self._resume = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._resume:
            gc.enable()
