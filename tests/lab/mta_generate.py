"""Run the scenario families against one MTA and write captures and truths.

    sudo PCAPSMTP_LAB_NS=pc python3 -m tests.lab.mta_generate --mta exim --out DIR [FAMILY...]

Writes <mta>-<family>.pcap (server side), <mta>-<family>.client.pcap and a .truth.json
for each; the MTA's log and the client transcripts go to --logs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.lab.capture import captures
from tests.lab.mta import MailServer, load_all
from tests.lab.mta_scenarios import FAMILIES, Family, by_name, check_proof, sessions
from tests.lab.netns import CLI, CLI_IF, SRV, SRV_IF, LabError, lab_network, wait_quiet
from tests.lab.scenarios import versions


def run_family(mta: MailServer, fam: Family, out: Path, logs: Path) -> list[str]:
    """Capture one family at both ends; write pcaps and truths; the problems found."""
    stem = f"{mta.name}-{fam.name}"
    specs = [(SRV, SRV_IF, out / f"{stem}.pcap"), (CLI, CLI_IF, out / f"{stem}.client.pcap")]
    offset = mta.log_size()
    with captures(specs):
        transcript = fam.body(mta)
        left = wait_quiet(CLI)
    log = mta.log_since(offset)
    (logs / f"{stem}.log").write_text(log)
    (logs / f"{stem}.client.log").write_text(transcript)
    for side, suffix in (("server", ""), ("client", ".client")):
        data = {"scenario": stem, "mta": mta.name, "family": fam.name,
                "how": f"{mta.version()}; {versions()}", "real": True,
                "capture_side": side, "sessions": sessions(fam, mta)}
        (out / f"{stem}{suffix}.truth.json").write_text(json.dumps(data, indent=2) + "\n")
    return check_proof(fam, mta, log) + [f"{stem}: client socket left: {ln}" for ln in left]


def generate(mta_name: str, out: Path, logs: Path, names: list[str]) -> list[str]:
    """Build the network, install and start the MTA, run the families; problems."""
    servers = load_all()
    if mta_name not in servers:
        raise SystemExit(f"unknown MTA {mta_name} (have: {', '.join(sorted(servers))})")
    mta = servers[mta_name]()
    known = by_name()
    chosen = [known[n] for n in names] if names else list(FAMILIES)
    chosen = [f for f in chosen if f.name not in mta.unsupported]
    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    mta.install()
    problems: list[str] = []
    with lab_network(), tempfile.TemporaryDirectory(prefix=f"psl-{mta_name}-") as work:
        mta.start(Path(work))
        try:
            for fam in chosen:
                print(f"== {mta_name} {fam.name}", file=sys.stderr, flush=True)
                try:
                    problems += run_family(mta, fam, out, logs)
                except LabError as exc:
                    problems.append(f"{mta_name}/{fam.name}: {exc}")
        finally:
            mta.stop()
    return problems


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 1 when a family did not happen as intended."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*")
    ap.add_argument("--mta", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--logs", type=Path)
    args = ap.parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="psl-mta-logs-"))
    try:
        problems = generate(args.mta, args.out, logs, args.families)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"logs in {logs}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
