"""Sharded analysis (worker processes) gives exactly the single-process result."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pcapsmtp.analyze import analyze
from pcapsmtp.capture import open_capture
from pcapsmtp.flows import DEFAULT_PORTS, Selection
from pcapsmtp.render import json as json_report
from pcapsmtp.render import text as text_report

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.pcap"))


def both_reports(path: Path, jobs: int, selection: Selection | None = None) -> tuple[str, str]:
    result = analyze(str(path), selection, jobs=jobs)
    return json_report.render(result), "\n".join(text_report.lines(result))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_same_with_two_workers(path: Path) -> None:
    assert both_reports(path, 2) == both_reports(path, 1)


def test_any_port_same_with_three_workers() -> None:
    sel = Selection(ports=DEFAULT_PORTS, any_port=True)
    path = ROOT / "samples" / "ipv6-any.pcap"
    assert both_reports(path, 3, sel) == both_reports(path, 1, sel)


def many_sessions(path: Path) -> int:
    """Every Ethernet sample's frames one after another, each shifted in time (ports
    are reused across samples), then a slice of the benchmark's interleaved traffic."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from make_capture import write
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    bench = path.with_suffix(".bench.pcap")
    write(bench, 3000)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    t0 = 1_700_000_000.0
    for n, src in enumerate([*SAMPLES, bench, *SAMPLES]):
        with open_capture(str(src)) as reader:
            if reader.info.linktypes and reader.info.linktypes != [1]:
                continue
            frames = list(reader)
        if not frames:
            continue
        base = frames[0].time
        for f in frames:
            t = t0 + n * 30.0 + (f.time - base)
            sec = int(t)
            out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), f.caplen,
                                   f.origlen) + f.data)
    path.write_bytes(b"".join(out))
    return len(out) - 1


def test_many_sessions_same_with_two_and_three_workers(tmp_path: Path) -> None:
    path = tmp_path / "many.pcap"
    assert many_sessions(path) > 3000
    one = both_reports(path, 1)
    assert one[0].count('"client":') > 80
    assert both_reports(path, 2) == one
    assert both_reports(path, 3) == one


def test_one_and_several_workers_agree_with_icmp(tmp_path: Path) -> None:
    """An ICMP too-big reaches the worker that builds the connection it quotes."""
    from scapy.utils import wrpcap

    from tests.test_icmp_too_big import pmtu_conversation

    packets, _, _ = pmtu_conversation(4)
    more, _, _ = pmtu_conversation(6, ignored=False)
    for p in more:
        p.time += 60.0  # after the first conversation, as a capture would have it
    path = tmp_path / "both.pcap"
    wrpcap(str(path), packets + more)
    one = analyze(str(path), jobs=1)
    for jobs in (2, 3):
        several = analyze(str(path), jobs=jobs)
        assert json_report.render(several) == json_report.render(one)
        assert "\n".join(text_report.lines(several)) == "\n".join(text_report.lines(one))
    assert [len([e for e in s.events if e.kind == "icmp-too-big"]) for s in one.sessions] \
        == [1, 1]


def test_cli_jobs_from_environment_and_stdin(tmp_path: Path) -> None:
    """PCAPSMTP_JOBS picks the worker count; stdin stays single-process and agrees."""
    path = tmp_path / "many.pcap"
    many_sessions(path)

    def run(jobs: str, *args: str, stdin: bytes | None = None) -> str:
        env = {**os.environ, "PCAPSMTP_JOBS": jobs}
        proc = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json",
                               *args], input=stdin, capture_output=True, env=env,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode()

    one = run("1", str(path))
    assert run("2", str(path)) == one
    piped = run("2", "-", stdin=path.read_bytes())
    assert piped.replace('"file":"-"', f'"file":{str(path)!r}'.replace("'", '"')) == one


def test_worker_errors_reach_the_caller(tmp_path: Path) -> None:
    from pcapsmtp.capture import CaptureError

    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all" * 10)
    with pytest.raises(CaptureError):
        analyze(str(bad), jobs=2)


def test_replies_taken_as_workers_finish(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The first worker finishing last (its reply taken after the second's) changes
    nothing: replies are put back in worker order."""
    import time

    from pcapsmtp import analyze as analyze_mod

    path = tmp_path / "many.pcap"
    many_sessions(path)
    one = both_reports(path, 1)
    real = analyze_mod._worker

    def late_first(*args: object) -> None:
        if args[2] == 0:  # index: shard 0 is held back
            time.sleep(1.0)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(analyze_mod, "_worker", late_first)
    assert both_reports(path, 2) == one


def test_a_dead_worker_is_an_error_naming_its_exit_status(monkeypatch) -> None:  # noqa: ANN001
    from pcapsmtp import analyze as analyze_mod

    def dies(*args: object) -> None:
        if args[2] == 1:
            os._exit(7)
        analyze_mod.__dict__["_real_worker"](*args)

    monkeypatch.setitem(analyze_mod.__dict__, "_real_worker", analyze_mod._worker)
    monkeypatch.setattr(analyze_mod, "_worker", dies)
    with pytest.raises(RuntimeError, match=r"worker process \d+ died \(exit status 7\)"):
        analyze(str(SAMPLES[0]), jobs=2)


def test_parallel_rendering_same_as_serial(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """JSON sessions rendered by forked workers (store.parallel_map) come out the same and
    in the same order; a filtered view too; a transformed view stays serial."""
    from pcapsmtp import store as store_mod

    path = tmp_path / "many.pcap"
    many_sessions(path)
    serial = json_report.render(analyze(str(path), jobs=1))
    monkeypatch.setattr(store_mod, "PARALLEL_MIN_SESSIONS", 2)
    monkeypatch.setattr(store_mod, "PARALLEL_BATCH", 3)
    result = analyze(str(path), jobs=2)
    assert json_report.render(result) == serial
    view = result.sessions.filter(lambda s: s.id % 3 == 0)
    texts = list(store_mod.parallel_map(view, lambda s: f"{s.id}:{len(s.events)}", jobs=2))
    assert texts == [f"{s.id}:{len(s.events)}" for s in view]
    mapped = result.sessions.map(lambda s: s)
    assert list(store_mod.parallel_map(mapped, lambda s: str(s.id), jobs=2)) == \
        [str(i) for i in range(1, len(result.sessions) + 1)]
