"""Check that a speed change left every report byte for byte as it was.

    python3 benchmarks/same_reports.py --save /tmp/before     # on the old code
    python3 benchmarks/same_reports.py --check /tmp/before    # on the new code

Writes the text and JSON reports of every shipped sample, of any extra captures
given (``--also DIR`` takes every *.pcap* under DIR, e.g. ../shared/corpus), and of
the benchmark capture with one and two worker processes; ``--check`` lists the
reports that differ.  A speed-up must not change what a user reads.  Paths are given
to analyze relative to the checkout, so the old code can run from another clone or a
worktree (``git worktree add /tmp/old HEAD~5``, then ``--save`` there).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def cases(also: list[Path], bench: Path | None) -> list[tuple[str, list[str]]]:
    """(report name, analyze arguments) for every report to compare."""
    out: list[tuple[str, list[str]]] = []
    captures = [(ROOT, p) for p in sorted(ROOT.glob("samples/*")) if _is_capture(p)]
    for folder in also:
        captures += [(folder, p) for p in sorted(folder.rglob("*")) if _is_capture(p)]
    for top, path in captures:
        name = str(path.relative_to(top)).replace("/", "_")
        where = _from_root(path)
        extra = ["--keylog", _from_root(path.with_suffix(".keys"))] \
            if path.with_suffix(".keys").exists() else []
        out.append((f"{name}.txt", [where]))
        out.append((f"{name}.json", ["--format", "json", where]))
        if extra:
            out.append((f"{name}.keylog.json", ["--format", "json", *extra, where]))
    if bench is not None:
        where = _from_root(bench)
        for jobs in ("1", "2"):
            out.append((f"bench-j{jobs}.json", ["--format", "json", "--jobs", jobs, where]))
        out.append(("bench-j2.txt", ["--jobs", "2", where]))
    return out


def _from_root(path: Path) -> str:
    """The path as analyze is given it, relative to the checkout (reports print it): the
    same reports then come out of any clone, e.g. a worktree of the old code."""
    return os.path.relpath(os.path.abspath(path), ROOT)  # abspath: symlinks stay as given


def _is_capture(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".pcap", ".pcapng", ".pcap.gz", ".cap"))


def run(dest: Path, also: list[Path], bench: Path | None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, args in cases(also, bench):
        with (dest / name).open("wb") as fh:
            proc = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", *args],
                                  stdout=fh, stderr=subprocess.PIPE, cwd=ROOT)
            fh.write(f"\n[exit {proc.returncode}] {proc.stderr.decode(errors='replace')}"
                     .encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path, metavar="DIR")
    mode.add_argument("--check", type=Path, metavar="DIR")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="DIR")
    ap.add_argument("--bench", type=Path, help="a big capture (benchmarks/out/bench-*.pcap)")
    ap.add_argument("--into", type=Path, metavar="DIR",
                    help="with --check: where the new reports go (default: DIR.new)")
    args = ap.parse_args()
    if args.save:
        run(args.save, args.also, args.bench)
        print(f"saved {len(list(args.save.iterdir()))} reports in {args.save}")
        return 0
    fresh = args.into or args.check.with_name(args.check.name + ".new")
    run(fresh, args.also, args.bench)
    differ = [name for name, _ in cases(args.also, args.bench)
              if not (args.check / name).exists()
              or not filecmp.cmp(args.check / name, fresh / name, shallow=False)]
    for name in differ:
        print(f"differs: {name}  (diff {args.check / name} {fresh / name})")
    print(f"{len(differ)} of {len(cases(args.also, args.bench))} reports differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
