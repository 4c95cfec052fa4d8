"""rules.needs is a promise: a rule skipped for lack of its event kinds finds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapsmtp import rules
from pcapsmtp.analyze import analyze

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.pcap"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_skipped_rules_would_have_found_nothing(path: Path) -> None:
    rules.load_rules()
    for session in analyze(str(path), jobs=1).sessions:
        kinds = {e.kind for e in session.events}
        for fn in rules.RULES:
            wanted = getattr(fn, "needs", None)
            if wanted is not None and wanted.isdisjoint(kinds):
                assert fn(session) in (None, []), (fn.__name__, session.id)
        # and the diagnosis with skipping is the one without
        skipped = rules.run_rules(session, strict=True)
        full = rules.run_rules(session, [lambda s, fn=fn: fn(s) for fn in rules.RULES],
                               strict=True)
        assert skipped == full
