"""Regenerate the lab's captures and truth files: one command for all of them.

    sudo python3 -m tests.lab.make_samples --out samples [SCENARIO ...]
    python3 -m tests.lab.make_samples --list

Postfix logs and client transcripts go to --logs (a temp dir by default), never into
samples/: they are for checking the scenario happened, not for committing.
"""

from __future__ import annotations

import argparse
import os
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


def generate(out: Path, logs: Path, names: Iterable[str]) -> list[Result]:
    """Build the lab, run the chosen scenarios, tear everything down; the results."""
    chosen = select(names)
    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 1 when any scenario did not happen as intended."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help="names (default: all)")
    ap.add_argument("--out", type=Path, default=Path("samples"))
    ap.add_argument("--logs", type=Path, help="Postfix logs and client transcripts")
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
    results = generate(args.out, logs, args.scenarios)
    problems = [p for r in results for p in r.problems]
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"{len(results)} scenario(s) written to {args.out}; logs in {logs}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
