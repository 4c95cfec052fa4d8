"""Issue 17's user-facing points: what a new user meets in the first hour."""

from __future__ import annotations

import io
import re
from pathlib import Path

from click.testing import CliRunner

from pcapsmtp import live
from pcapsmtp.analyze import analyze
from pcapsmtp.cli import main
from pcapsmtp.explain import CODES
from pcapsmtp.flows import Selection
from pcapsmtp.render import text
from pcapsmtp.rules import Finding
from pcapsmtp.timeline import Session
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


def _session(sid: int, code: str, client: str = "192.0.2.10") -> Session:
    s = Session(id=sid, client=(client, 40000 + sid), server=("2001:db8:ffff::25", 25),
                ip_version=6, first_time=1_700_000_000.0 + sid, last_time=1_700_000_012.5,
                first_frame=1, last_frame=20)
    s.verdict = Finding(code=code, summary="why", verdict=True)
    return s


def test_summary_table_keeps_its_columns_whatever_the_verdicts() -> None:
    """A long verdict and IPv6 endpoints used to drop start UTC and pkts: the header is the
    same for every report, and no line is wider than 100 columns."""
    assert text.WIDTH == 100
    short = text.session_table([_session(1, "ok", "192.0.2.1")])
    long_ = text.session_table([_session(1, "tls-server-silent-after-handshake",
                                         "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1234")])
    assert short[0].split() == long_[0].split() == [
        "#", "client", "server", "start", "UTC", "secs", "pkts", "ended", "verdict"]
    assert max(map(len, long_)) <= 100
    # cells wrap onto a second line of the row, whole: nothing of the verdict is lost
    assert long_[2].endswith("tls-server-silent-") and long_[3].endswith("after-handshake")


def test_needing_attention_groups_sessions_by_verdict() -> None:
    sessions = [_session(i, "tcp-no-answer") for i in [*range(3, 15), 20, 22]]
    sessions += [_session(15, "smtp-rejected"), _session(16, "ok")]
    out = list(text.summary(sorted(sessions, key=lambda s: s.id)))
    at = out.index("needing attention:")
    assert out[at + 1:at + 3] == ["  tcp-no-answer 14: #3-#14, #20, #22",
                                  "  smtp-rejected 1: #15"]
    assert text.id_ranges(list(range(1, 100, 2)), most=3) == "#1, #3, #5, and 47 more"


LOOKUP = re.compile(r"\blogs?\b")
RELATIVE = re.compile(r"\+\d+(\.\d+)? ?s\b")
UTC_TIME = re.compile(r"\b20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC\b")


def test_advice_to_look_in_a_log_gives_the_utc_time() -> None:
    """'check the client's log ... at +0.0 s' names a time no log has: every next step that
    sends the reader to a log with a time gives it in UTC, as MTAs log, never relative."""
    seen = 0
    for pcap in sorted(SAMPLES.glob("*.pcap")):
        for session in analyze(str(pcap)).sessions:
            for finding in [session.verdict, *session.notes]:
                step = getattr(finding, "next_step", None) or ""
                if not LOOKUP.search(step):
                    continue
                assert not RELATIVE.search(step), (pcap.name, step)
                assert "this time" not in step and "that time" not in step, (pcap.name, step)
                seen += bool(UTC_TIME.search(step))
    assert seen >= 3  # the samples reach several of these rules (tls, tcp, smtp)


def test_ja3_ja4_in_the_session_header_of_text_markdown_and_html() -> None:
    """The fingerprints the JSON carries are where a reader compares clients."""
    import json

    pcap = str(SAMPLES / "starttls-ok.pcap")
    run = CliRunner()
    report = json.loads(run.invoke(main, ["analyze", pcap, "-f", "json"]).stdout)
    hello = next(e for e in report["sessions"][0]["events"]
                 if e.get("kind") == "tls-client-hello")
    ja3, ja4 = hello["fields"]["ja3"], hello["fields"]["ja4"]
    assert ja3 and ja4
    for fmt in ("text", "markdown", "html"):
        out = run.invoke(main, ["analyze", pcap, "--brief", "-f", fmt]).stdout
        header = out[out.index("Session 1"):][:600]
        assert ja3 in header and ja4 in header, fmt


def test_progress_bar_on_a_terminal_nothing_elsewhere(tmp_path: Path) -> None:
    """A file of known size read on a terminal: a bar with its percentage, then a line
    saying the analysis after the reading runs.  Not on a file or a pipe."""
    import time

    from pcapsmtp.progress import POLL, FileProgress

    capture = tmp_path / "x.pcap"
    capture.write_bytes(bytes(4096))
    assert not FileProgress.usable(str(capture), io.StringIO())
    assert not FileProgress.usable("-", TTY())
    assert FileProgress.usable(str(capture), TTY())
    shown = TTY()
    with FileProgress(str(capture), stream=shown), open(capture, "rb", buffering=0) as fh:
        fh.read(2048)
        deadline = time.monotonic() + 20 * POLL
        while "50%" not in shown.text and time.monotonic() < deadline:
            time.sleep(POLL / 2)
        assert "50%" in shown.text and "B/s" in shown.text, shown.text
        fh.read()
        while "analysing" not in shown.text and time.monotonic() < deadline:
            time.sleep(POLL / 2)
    assert "file read; analysing the sessions" in shown.text
    assert shown.text.endswith("\r\033[K")  # the line is cleared for the report
    r = CliRunner().invoke(main, ["analyze", str(SAMPLES / "plain-ok.pcap"), "--brief"])
    assert r.exit_code == 0 and r.stderr == ""
