"""The verdicts on captures of MTAs other than Postfix, made by the multi-MTA lab.

tests/lab/mta/ runs Debian's Exim (and, as they come, OpenSMTPD, sendmail, Haraka) from a
private root in the lab's namespaces; tests/lab/mta_generate.py writes a server-side and
a client-side capture of each family with its truth. The small ones are committed under
samples/mta/ so that every run, root or not, holds pcapsmtp to what real servers other
than Postfix do: their timeout wording (Exim's 'SMTP command timeout'), their teardown.
Issue 16: one miss fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_lab import check_verdicts, truth_for

MTA_SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples" / "mta").glob("*.pcap"))


def test_there_are_samples_of_other_mtas_from_both_sides() -> None:
    sides = {(truth_for(p)["mta"], truth_for(p)["capture_side"]) for p in MTA_SAMPLES}
    assert {("exim", "server"), ("exim", "client")} <= sides


@pytest.mark.parametrize("pcap", MTA_SAMPLES, ids=[p.name for p in MTA_SAMPLES])
def test_verdict_on_another_mtas_capture(pcap: Path) -> None:
    check_verdicts(pcap)
