"""Run pcapsmtp over a folder of captures with tshark's view beside each, report disagreements.

    python3 scripts/corpus_check.py ../shared/corpus

For every ``X.pcap`` with an ``X.pcap.tshark.tsv`` next to it (columns: stream, frame,
..., smtp_cmd, smtp_param, smtp_code, ...), compares the frames at which tshark saw SMTP
commands and reply codes with the frames of our timeline, and lists the verdicts.  Not
part of the test suite: the corpus belongs to other projects and is not shipped.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path


def tshark_dialogue(tsv: Path) -> Counter[tuple[int, str]]:
    """(frame, 'VERB') and (frame, 'CODE') as tshark decoded them."""
    seen: Counter[tuple[int, str]] = Counter()
    with tsv.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            frame = int(row["frame"])
            for verb in filter(None, (row.get("smtp_cmd") or "").split(",")):
                seen[(frame, verb.upper())] += 1
            for code in filter(None, (row.get("smtp_code") or "").split(",")):
                seen[(frame, code)] += 1
    return seen


def our_dialogue(report: dict) -> Counter[tuple[int, str]]:
    seen: Counter[tuple[int, str]] = Counter()
    for s in report["sessions"]:
        for e in s["events"]:
            if e["kind"] == "smtp-command":
                seen[(e["frame"], e["fields"]["verb"])] += 1
            elif e["kind"] == "smtp-reply" and e["fields"].get("code") is not None:
                seen[(e["frame"], str(e["fields"]["code"]))] += 1
    return seen


def check(pcap: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json",
                           "--any-port", str(pcap)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {proc.stderr.strip()}"
    report = json.loads(proc.stdout)
    verdicts = " ".join(s["verdict"]["code"] for s in report["sessions"])
    tsv = pcap.with_name(pcap.name + ".tshark.tsv")
    if not tsv.exists():
        return f"{verdicts} (no tshark view)"
    theirs, ours = tshark_dialogue(tsv), our_dialogue(report)
    # tshark reports each pipelined command once per frame; compare presence, not counts.
    missing, extra = set(theirs) - set(ours), set(ours) - set(theirs)
    if not missing and not extra:
        return f"{verdicts}  dialogue agrees ({len(theirs)} items)"
    return (f"{verdicts}  DIFFERS: tshark only {sorted(missing)[:6]}"
            f"{' ...' if len(missing) > 6 else ''}; ours only {sorted(extra)[:6]}"
            f"{' ...' if len(extra) > 6 else ''}")


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus")
    pcaps = sorted(root.rglob("*.pcap"))
    if not pcaps:
        print(f"no captures under {root}", file=sys.stderr)
        return 1
    for pcap in pcaps:
        print(f"{pcap.relative_to(root)}: {check(pcap)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
