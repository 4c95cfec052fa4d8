"""Regenerate the lab's captures and truth files: one command for all of them.

    sudo python3 -m tests.lab.make_samples --out samples [SCENARIO ...]
    python3 -m tests.lab.make_samples --list

Postfix logs and client transcripts go to --logs (a temp dir by default), never into
samples/: they are for checking the scenario happened, not for committing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tests.lab.netns import LabError, lab_network
from tests.lab.postfix import running_postfix
from tests.lab.scenarios import (
    SCENARIOS,
    Ctx,
    Result,
    by_name,
    rewrite_truth,
    run_scenario,
    versions,
)


def select(names: Iterable[str]) -> list[str]:
    """Validate scenario names; all of them, in table order, when none are given."""
    known = by_name()
    chosen = list(names) or [sc.name for sc in SCENARIOS]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    return chosen


REPO = Path(__file__).resolve().parents[2]
# a bound on one worker's whole run (the full table takes a few minutes on one network)
WORKER_TIMEOUT = 3600.0


def generate(out: Path, logs: Path, names: Iterable[str], jobs: int = 1) -> list[Result]:
    """Build the lab, run the chosen scenarios, tear everything down; the results.

    With jobs > 1 the scenarios are dealt round-robin to that many workers, each a
    subprocess with its own lab network and Postfix (namespace prefix $PCAPSMTP_LAB_NS plus
    the worker's index): netns.py reads the prefix at import, so a process of its own is
    the simple way to give each worker a network that cannot meet the others'.
    """
    chosen = select(names)
    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs, len(chosen)))
    if jobs > 1:
        return _generate_parallel(out, logs, chosen, jobs)
    results = []
    with lab_network(), running_postfix() as pf:
        ctx = Ctx(out=out, logs=logs, pf=pf, versions=versions())
        scenarios = by_name()
        for name in chosen:
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                results.append(run_scenario(ctx, scenarios[name]))
            except LabError as exc:
                results.append(Result(name, [], [f"{name}: {exc}"]))
    return results


def _generate_parallel(out: Path, logs: Path, chosen: list[str], jobs: int) -> list[Result]:
    """Run each share of the scenarios in a worker process; the results in table order."""
    prefix = os.environ.get("PCAPSMTP_LAB_NS", "psl")
    workers = []
    for i in range(jobs):
        share = chosen[i::jobs]
        results_file = logs / f"worker{i}.json"
        results_file.unlink(missing_ok=True)
        env = {**os.environ, "PCAPSMTP_LAB_NS": f"{prefix}{i + 1}"}
        argv = [sys.executable, "-m", "tests.lab.make_samples", "--out", str(out),
                "--logs", str(logs / f"worker{i}"), "--results", str(results_file), *share]
        workers.append((share, results_file,
                        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)))
    by_scenario: dict[str, Result] = {}
    for share, results_file, proc in workers:
        try:
            proc.wait(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        got = json.loads(results_file.read_text()) if results_file.exists() else []
        for r in got:
            by_scenario[r["name"]] = Result(r["name"], [Path(f) for f in r["files"]],
                                            r["problems"])
        for name in share:
            by_scenario.setdefault(name, Result(name, [], [
                f"{name}: lab worker exited {proc.returncode} before reporting it"]))
    return [by_scenario[name] for name in chosen]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 1 when any scenario did not happen as intended."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help="names (default: all)")
    ap.add_argument("--out", type=Path, default=Path("samples"))
    ap.add_argument("--logs", type=Path, help="Postfix logs and client transcripts")
    ap.add_argument("--jobs", type=int, default=1,
                    help="independent lab networks to run the scenarios on (default 1)")
    ap.add_argument("--results", type=Path, help=argparse.SUPPRESS)  # a parallel worker's
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--truth-only", action="store_true",
                    help="rewrite truth files of existing captures from the table, keeping "
                         "each one's 'how' (no root); of the scenarios named, or all")
    args = ap.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:32} {sc.sessions[0]['verdict']}")
        return 0
    if args.truth_only:
        for path in rewrite_truth(args.out, select(args.scenarios) if args.scenarios else None):
            print(path)
        return 0
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, tcpdump, nftables)", file=sys.stderr)
        return 2
    logs = args.logs or Path(tempfile.mkdtemp(prefix="psl-logs-"))
    results = generate(args.out, logs, args.scenarios, args.jobs)
    if args.results:
        args.results.write_text(json.dumps(
            [{"name": r.name, "files": [str(f) for f in r.files], "problems": r.problems}
             for r in results]))
    problems = [p for r in results for p in r.problems]
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"{len(results)} scenario(s) written to {args.out}; logs in {logs}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
