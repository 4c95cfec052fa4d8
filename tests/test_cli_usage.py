"""Issue 17's user-facing points: what a new user meets in the first hour."""

from __future__ import annotations

import io
from pathlib import Path

from click.testing import CliRunner

from pcapsmtp import live
from pcapsmtp.cli import main
from pcapsmtp.explain import CODES
from pcapsmtp.flows import Selection
from tests.test_live import TTY, FakeSource, frames

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_fail_on_unknown_code_is_a_usage_error() -> None:
    """A typo in --fail-on would switch a CI gate off silently: it is refused, exit 2."""
    r = CliRunner().invoke(main, ["analyze", str(SAMPLES / "plain-ok.pcap"),
                                  "--fail-on", "ok,smtp-rejectd"])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "smtp-rejectd" in err[0] and "pcapsmtp explain" in err[0]


def test_fail_on_known_codes_and_any_failure_are_accepted() -> None:
    r = CliRunner().invoke(main, ["analyze", str(SAMPLES / "plain-ok.pcap"), "--brief",
                                  "--fail-on", "any-failure,smtp-rejected"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["analyze", str(SAMPLES / "plain-ok.pcap"), "--brief",
                                  "--fail-on", "ok"])
    assert r.exit_code == 3, r.output


def _live_output(out: io.StringIO | TTY) -> str:
    items = frames(SAMPLES / "reject-550.pcap")
    opts = live.Options(iface="fake0", selection=Selection(), bpf="tcp", idle=1.0,
                        duration=1.5)
    live.LiveRun(opts, FakeSource(items), out=out, err=io.StringIO()).run()
    return out.getvalue() if isinstance(out, io.StringIO) else out.text


def test_live_cuts_verdict_lines_only_on_a_terminal() -> None:
    """To a file or a pipe the verdict line is whole; on a terminal it fits the width."""
    whole = next(ln for ln in _live_output(io.StringIO()).splitlines() if "#1 " in ln)
    assert "smtp-rejected" in whole and len(whole) > live.WIDTH and not whole.endswith("...")
    cut = next(ln for ln in _live_output(TTY()).splitlines() if "#1 " in ln)
    assert len(cut) < len(whole) and cut.endswith("...")


def test_explain_without_code_gives_each_meaning() -> None:
    r = CliRunner().invoke(main, ["explain"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert len(lines) == len(CODES)
    for code, line in zip(CODES, lines, strict=True):
        assert line.split()[0] == code and len(line.split()) > 3 and len(line) <= 100
    assert "accepted" in lines[CODES.index("ok")]
