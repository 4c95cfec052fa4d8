"""Finished sessions kept out of memory: what keeps a big capture's footprint flat.

A busy MX capture holds hundreds of thousands of sessions, each with its
timeline; keeping them all as objects until the report is written cost about
1 MB per 10 sessions.  A finished, diagnosed session is pickled into a spool
(RAM up to a few MB, then a temporary file) and read back when a renderer
iterates; only a small stub stays in memory for the summary and for the
rules that look across sessions.
"""

from __future__ import annotations

import copyreg
import dataclasses
import gc
import io
import multiprocessing as mp
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any

from pcapsmtp.timeline import Event, Session

SPOOL_IN_MEMORY = 8 * 2**20  # bytes of pickled sessions kept in RAM before spilling to disk
# parallel_map: fewer sessions than this are rendered in this process (forking costs ms),
# and each worker gets this many sessions at a time.
PARALLEL_MIN_SESSIONS = 1000
PARALLEL_BATCH = 64


def default_jobs() -> int:
    """Worker processes for a big capture: $PCAPSMTP_JOBS, else min(CPUs, 4)."""
    env = os.environ.get("PCAPSMTP_JOBS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(os.cpu_count() or 1, 4))


# Events (slotted dataclasses) pickled as their constructor's arguments instead of
# object state.  SessionStore.add on 2,000 sessions of the 100k benchmark, with the
# seek per add also gone: 141 -> 102 us a session; loading is as fast as before.
_EVENT_FIELDS = [f.name for f in dataclasses.fields(Event)]
assert all(f.init for f in dataclasses.fields(Event)), "Event(*fields) must rebuild an Event"
_event_args = attrgetter(*_EVENT_FIELDS)
_DISPATCH = {**copyreg.dispatch_table, Event: lambda e: (Event, _event_args(e))}


def _dumps(session: Session) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(session)
    return buf.getvalue()


def stub(session: Session) -> Session:
    """A copy with only what the cross-session rules and the summary table read:
    identity (the client's ISN too: it tells one connection seen through a NAT), times,
    the verdict's code, the EHLO reply's code and keywords, the first FIN/RST (who closed,
    for ``render.common.ending_text``) and a PROXY protocol header (the original client).
    The parent unpickles every worker's stubs in its serial tail: without the verdict's
    text and evidence and the reply's lines, 14.5 -> 8 us a stub (100k benchmark)."""
    if not session.of_kind("proxy-header"):
        # Nearly every session: the first EHLO reply and the first close read off the
        # kind index (which the rules built) instead of a pass over the timeline: 7.0 ->
        # 2.6 us a session of the 100k benchmark.
        ehlo = next((e for e in session.of_kind("smtp-reply")
                     if e.fields.get("answers") == "EHLO"), None)
        close = next(iter(session.of_kind("tcp-fin", "tcp-rst")), None)
        return _identity(session, [e for e in (_ehlo_stub(ehlo), close) if e is not None],
                         _verdict_code(session))
    ehlo = close = proxy = None
    for e in session.events:
        kind = e.kind
        if ehlo is None and kind == "smtp-reply" and e.fields.get("answers") == "EHLO":
            ehlo = e
        elif close is None and (kind == "tcp-fin" or kind == "tcp-rst"):
            close = e
        elif proxy is None and kind == "proxy-header":  # before the EHLO reply, if any
            proxy = e
        if ehlo is not None and close is not None:
            break
    return _identity(session, [e for e in (proxy, _ehlo_stub(ehlo), close) if e is not None],
                     _verdict_code(session))


def _verdict_code(session: Session) -> VerdictCode | None:
    verdict = session.verdict
    return None if verdict is None else VerdictCode(getattr(verdict, "code", None))


def _ehlo_stub(e: Event | None) -> Event | None:
    """An EHLO reply with what the cross-session rules read of it (rules.cross._caps)."""
    if e is None:
        return None
    keep = {k: e.fields[k] for k in ("answers", "code", "capabilities") if k in e.fields}
    return Event(e.time, e.frame, e.direction, e.kind, "", e.tls, e.first_frame, keep)


def _identity(session: Session, events: list[Any], verdict: Any) -> Session:
    """A new Session with ``session``'s identity, times and counts, and the given events
    and verdict: the part every stub keeps."""
    return Session(
        id=session.id, client=session.client, server=session.server,
        ip_version=session.ip_version, first_time=session.first_time,
        last_time=session.last_time, first_frame=session.first_frame,
        last_frame=session.last_frame, packets=session.packets, syn_seen=session.syn_seen,
        client_isn=session.client_isn,
        implicit_tls=session.implicit_tls, open_at_end=session.open_at_end,
        clock_steps=session.clock_steps, events=events, verdict=verdict,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class VerdictCode:
    """A verdict reduced to its code: what a report stub keeps of it."""

    code: str | None


def report_stub(session: Session) -> Session:
    """A lighter stub, for a store that only renderers read (a redacted report's, see
    redact.Redactor): what the summaries read of every session -- identity, times,
    packets, who closed, the verdict's code -- without the verdict's text and evidence
    or the EHLO reply, which only the cross-session rules read.  On the 100k-packet
    benchmark a stub made from a loaded session held 4.5 KB, this one 1.4 KB."""
    close = next((e for e in session.events if e.kind == "tcp-fin" or e.kind == "tcp-rst"),
                 None)
    return _identity(session, [close] if close is not None else [], _verdict_code(session))


#: What a store keeps instead of pickled sessions: ``(key, fn)``, see SessionStore.
RenderOnAdd = tuple[str, Callable[[Session], tuple[str, str]]]
#: What a store keeps in memory of each session besides its stub: ``fn(session)``, see
#: SessionStore (``learn``).
LearnOnAdd = Callable[[Session], Any]


#: A worker's account of one session: (stub, offset in its spool, length, learnt or None).
Entry = tuple[Session, int, int, Any]


class SessionStore(Sequence[Session]):
    """Sessions in id order, loaded one at a time from a spool; behaves like a list.

    ``map`` and ``filter`` return lazy views, so redaction and report cuts do
    not pull every session into memory either.

    ``render=(key, fn)``: the store keeps each session's report text instead of the
    session.  For a report in one format (``pcapsmtp analyze --format json`` or text,
    no redaction): the session is rendered where it is finished -- in the analysis
    worker that built it -- and never pickled nor loaded again.  ``fn(session)``
    returns the rendering split around the session id, ``(before, after)``: ids are
    only final after the workers' spools are merged, so :func:`rendered` puts the
    final one in between.  ``key`` names the format; a renderer asks for its own key.
    Measured on the 100k-packet benchmark (2,421 sessions, one process): pickling and
    loading cost 125 us a session, and the text report loaded each session twice.
    ``load`` refuses on such a store.

    ``learn=fn``: ``fn(session)`` is kept in memory with the session's stub, computed where
    the session is finished (like ``render``), and read back in order by :func:`learnt`.
    For a redacted report: the names redaction must learn from every session before it
    shows any (redact.names_in_session), found by the analysis workers in parallel
    instead of by the parent loading every session once more for them.  Keep it small:
    it stays in memory for every session, as the stub does.

    ``stub``: what stays in memory of each session: :func:`stub` (what the cross-session
    rules and the summaries read), or :func:`report_stub` for a store only renderers read.
    """

    def __init__(self, spool: Any = None, render: RenderOnAdd | None = None,
                 learn: LearnOnAdd | None = None,
                 stub: Callable[[Session], Session] = stub) -> None:
        # ``spool``: a file to write to instead of our own (a worker process's, see analyze)
        self._spool = spool if spool is not None else \
            tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self._spools = [self._spool]
        self._where: dict[int, tuple[int, int, int]] = {}  # id -> (spool, offset, length)
        self._fds: list[int | None] = []  # per spool after seal: a file to pread, or None
        # End of our spool while only add() touches it: a seek (which also flushes a
        # buffered file) per session is what this saves.
        self._end: int | None = None
        self.stubs: list[Session] = []
        self._order: list[int] = []
        self._render = render
        self._learn = learn
        self._stub = stub
        self.learnt: dict[int, Any] = {}  # id -> learn(session), when ``learn`` is given

    def add(self, session: Session) -> None:
        if self._render is None:
            data = _dumps(session)
        else:
            data = pickle.dumps(self._render[1](session), pickle.HIGHEST_PROTOCOL)
        if self._end is None:  # first add, or a load() moved the file position
            self._end = self._spool.seek(0, 2)
        self._where[session.id] = (0, self._end, len(data))
        self._spool.write(data)
        self._end += len(data)
        self.stubs.append(self._stub(session))
        if self._learn is not None:
            self.learnt[session.id] = self._learn(session)

    def entries(self) -> list[Entry]:
        """(stub, offset, length, learnt or None) of every session added: what a worker
        hands back."""
        self._spool.flush()
        return [(st, *self._where[st.id][1:], self.learnt.get(st.id)) for st in self.stubs]

    def merge(self, parts: list[tuple[Any, list[Entry]]]) -> None:
        """Adopt the spools of worker processes, ``[(spool file, entries), ...]``, whose
        session ids are sortable keys (first frame); renumber them 1..N in that order."""
        rows = []
        for spool, entries in parts:
            self._spools.append(spool)
            index = len(self._spools) - 1
            rows.extend((st.id, index, offset, length, st, learnt)
                        for st, offset, length, learnt in entries)
        rows.sort(key=lambda r: r[0])
        for new_id, (_, index, offset, length, st, learnt) in enumerate(
                rows, len(self.stubs) + 1):
            st.id = new_id
            self._where[new_id] = (index, offset, length)
            self.stubs.append(st)
            if self._learn is not None:
                self.learnt[new_id] = learnt

    def seal(self) -> None:
        """No more sessions: fix the order (by id, i.e. by first packet)."""
        self.stubs.sort(key=lambda s: s.id)
        self._order = [s.id for s in self.stubs]
        self._fds = []
        for spool in self._spools:
            spool.flush()
            on_disk = not isinstance(spool, tempfile.SpooledTemporaryFile) or spool._rolled
            # pread: no shared file offset, so forked renderers (parallel_map) can read too
            self._fds.append(spool.fileno() if on_disk else None)

    def _read(self, sid: int) -> bytes:
        index, offset, length = self._where[sid]
        fd = self._fds[index] if index < len(self._fds) else None
        if fd is not None:
            data = os.pread(fd, length, offset)
        else:
            spool = self._spools[index]
            spool.seek(offset)
            data = spool.read(length)
            if index == 0:
                self._end = None
        return data

    def load(self, sid: int) -> Session:
        if self._render is not None:
            raise RuntimeError("this store kept renderings (render=...), not sessions")
        session: Session = pickle.loads(self._read(sid))
        session.id = sid  # a worker's spool holds the pre-merge id
        return session

    def rendering(self, sid: int) -> str:
        """The text ``render`` made of session ``sid``, with its final id."""
        before, after = pickle.loads(self._read(sid))
        return f"{before}{sid}{after}"

    def __len__(self) -> int:
        return len(self._order)

    def _all(self) -> SessionView:
        """Every session, as a view: the store reads like its own untransformed view."""
        return SessionView(self, self._order, None)

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator[Session]:
        return iter(self._all())

    def map(self, fn: Callable[[Session], Session]) -> SessionView:
        return SessionView(self, list(self._order), fn)

    def filter(self, keep: Callable[[Session], bool]) -> SessionView:
        """Sessions whose STUB passes ``keep`` (ids, addresses, times, verdict)."""
        return SessionView(self, [s.id for s in self.stubs if keep(s)], None)

    def close(self) -> None:
        for spool in self._spools:
            spool.close()


class SessionView(Sequence[Session]):
    """A lazy selection of a store's sessions, optionally transformed on the way out."""

    def __init__(self, store: SessionStore, ids: list[int],
                 fn: Callable[[Session], Session] | None) -> None:
        self.store, self.ids, self.fn = store, ids, fn

    def _get(self, sid: int) -> Session:
        s = self.store.load(sid)
        return self.fn(s) if self.fn else s

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._get(sid) for sid in self.ids[i]]
        return self._get(self.ids[i])

    def __iter__(self) -> Iterator[Session]:
        for sid in self.ids:
            yield self._get(sid)

    def map(self, fn: Callable[[Session], Session]) -> SessionView:
        inner = self.fn
        return SessionView(self.store, self.ids, (lambda s: fn(inner(s))) if inner else fn)

    def filter(self, keep: Callable[[Session], bool]) -> SessionView:
        wanted = set(self.ids)
        ids = [s.id for s in self.store.stubs if s.id in wanted and keep(s)]
        return SessionView(self.store, ids, self.fn)


def verdicts(sessions: Sequence[Session]) -> list[tuple[int, str]]:
    """(id, verdict code or "-") of each session, in order, from the in-memory stubs of a
    store or view: for counting verdicts without loading every session.

    Only these two fields: the stubs behind a redacting view are not redacted, so
    nothing else of them may reach a report (use :func:`plain_stubs` for more)."""
    return [(s.id, getattr(s.verdict, "code", None) or "-") for s in _light(sessions)]


def clock_stepped(sessions: Sequence[Session]) -> list[int]:
    """Ids of the sessions in which the capture's clock jumped (Session.clock_steps), from
    the stubs as :func:`verdicts` reads them: frames and seconds, nothing to redact."""
    return [s.id for s in _light(sessions) if s.clock_steps]


def _light(sessions: Sequence[Session]) -> Sequence[Session]:
    """The in-memory stubs of a store or view (the sessions themselves for a list)."""
    if isinstance(sessions, SessionStore):
        return sessions.stubs
    if isinstance(sessions, SessionView):
        return _stubs(sessions.store, sessions.ids)
    return sessions


def plain_stubs(sessions: Sequence[Session]) -> Sequence[Session] | None:
    """The stubs of a store or untransformed view (no redaction in between), or None
    when the sessions themselves must be read."""
    store, ids = _plain_ids(sessions)
    return None if store is None else _stubs(store, ids)


def _stubs(store: SessionStore, ids: list[int]) -> Sequence[Session]:
    if len(ids) == len(store.stubs):
        return store.stubs
    by_id = {s.id: s for s in store.stubs}
    return [by_id[i] for i in ids]


def rendered(sessions: Sequence[Session], key: str) -> Iterator[str] | None:
    """Each session's text as a store's ``render=(key, ...)`` made it, in order; None when the
    sessions are not such a store (or a plain view of one): render them then."""
    store, ids = _plain_ids(sessions)
    if store is None or store._render is None or store._render[0] != key:
        return None
    return map(store.rendering, ids)


def learnt(sessions: Sequence[Session], fn: LearnOnAdd) -> list[Any] | None:
    """What a store's ``learn=fn`` kept of each session, in order; None when the sessions
    are not such a store (or a plain view of one), or it kept another function's: ask
    the sessions themselves then."""
    store, ids = _plain_ids(sessions)
    if store is None or store._learn is not fn:
        return None
    return [store.learnt[sid] for sid in ids]


def parallel_map(sessions: Sequence[Session], fn: Callable[[Session], Any],
                 jobs: int | None = None) -> Iterator[Any]:
    """``fn(session)`` for each session, in order, computed by forked workers when
    ``sessions`` is a store (or an untransformed view of one) of many sessions.

    For renderers: loading a session and turning it into text is most of a report's
    cost, and the parent otherwise does it alone after the analysis workers finish
    (measured: JSON of the 300k-packet benchmark, 7,204 sessions, 2.3 s in one process).
    A view with a transform (redaction) stays in this process: its pseudonym table
    and counts are state.  At most two batches per worker are in flight, so memory
    stays bounded whatever the consumer's speed.
    """
    store, ids = _plain_ids(sessions)
    jobs = default_jobs() if jobs is None else jobs
    if (store is None or jobs < 2 or len(ids) < PARALLEL_MIN_SESSIONS
            or "fork" not in mp.get_all_start_methods() or mp.current_process().daemon):
        for s in sessions:
            yield fn(s)
        return
    batches = [ids[i:i + PARALLEL_BATCH] for i in range(0, len(ids), PARALLEL_BATCH)]
    ctx = mp.get_context("fork")
    workers = []
    for _ in range(min(jobs, len(batches))):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_map_worker, args=(store, fn, there), daemon=True)
        proc.start()
        there.close()
        workers.append((proc, here))
    try:
        sent = 0
        for _ in range(2 * len(workers)):
            if sent < len(batches):
                workers[sent % len(workers)][1].send(batches[sent])
                sent += 1
        for i in range(len(batches)):
            proc, conn = workers[i % len(workers)]
            try:
                status, value = conn.recv()
            except EOFError:
                raise RuntimeError(f"render worker {proc.pid} died "
                                   f"(exit status {proc.exitcode})") from None
            if status == "error":
                raise value
            if sent < len(batches):
                conn.send(batches[sent])
                sent += 1
            yield from value
    finally:
        for _proc, conn in workers:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc, _ in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


def _plain_ids(sessions: Sequence[Session]) -> tuple[SessionStore | None, list[int]]:
    if isinstance(sessions, SessionStore):
        return sessions, list(sessions._order)
    if isinstance(sessions, SessionView) and sessions.fn is None:
        return sessions.store, list(sessions.ids)
    return None, []


def _map_worker(store: SessionStore, fn: Callable[[Session], Any], conn: Any) -> None:
    # The parent's objects came with the fork: keep the collector from scanning them (and
    # from touching their pages, which copy-on-write would then duplicate).
    gc.freeze()
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        try:
            conn.send(("ok", [fn(store.load(sid)) for sid in batch]))
        except Exception as exc:  # noqa: BLE001 - the parent re-raises it
            try:
                conn.send(("error", exc))
            except Exception:  # noqa: BLE001
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
