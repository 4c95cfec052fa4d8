"""A capture whose timestamps jump (the capturing host's clock stepped by NTP or a resumed
VM) must name the jump and never print its size as a duration (issue 16).

No real stack produces a clock step on demand inside a test (tcpdump stamps packets with
the kernel's clock; stepping it would step the whole machine), so a real lab capture is
rewritten: from one record on, its timestamps are moved.  The pcap records are rewritten
here byte by byte, independent of pcapsmtp's reader.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLAIN_OK = REPO / "samples" / "plain-ok.pcap"  # swaks to Postfix: 21 frames in 0.02 s
STEP = -442_200_619.0  # the size seen in a real capture (issue 16)


def shifted(src: Path, dst: Path, from_frame: int, seconds: float) -> None:
    """Copy a classic little-endian microsecond pcap, moving frames >= from_frame."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "expected a little-endian microsecond pcap"
    out, pos, n = [data[:24]], 24, 0
    while pos < len(data):
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", data, pos)
        n += 1
        if n >= from_frame:
            t = sec + usec / 1e6 + seconds
            sec, usec = int(t), round((t - int(t)) * 1e6)
        out.append(struct.pack("<IIII", sec, usec, caplen, origlen))
        out.append(data[pos + 16:pos + 16 + caplen])
        pos += 16 + caplen
    dst.write_bytes(b"".join(out))


def report(pcap: Path, fmt: str = "json") -> str:
    proc = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "--format", fmt,
                           str(pcap)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture
def stepped_back(tmp_path: Path) -> Path:
    out = tmp_path / "stepped.pcap"
    shifted(PLAIN_OK, out, 9, STEP)  # frame 9 is the MAIL FROM
    return out


def test_a_step_back_is_named_and_never_a_duration(stepped_back: Path) -> None:
    data = json.loads(report(stepped_back))
    (s,) = data["sessions"]
    assert s["verdict"]["code"] == "ok"
    assert 0 <= s["duration"] < 1, "the session lasted 0.02 s; the step is not time passed"
    assert [st["frame"] for st in s["clock_steps"]] == [9]
    assert s["clock_steps"][0]["seconds"] == pytest.approx(STEP, abs=0.1)
    assert all(0 <= e["rel"] < 1 for e in s["events"])
    assert "clock-step" in [n["code"] for n in s["notes"]]
    assert data["capture"]["clock_stepped_in_sessions"] == [1]


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_no_report_prints_the_step_as_a_span(stepped_back: Path, fmt: str) -> None:
    """The step's size appears only where the jump is named, never as a time or span."""
    out = report(stepped_back, fmt)
    sized = [ln for ln in out.replace(",", "").splitlines() if "44220061" in ln]
    assert sized and all("jump" in ln for ln in sized), sized
    assert "no span" in out


def test_a_step_forward_of_days_is_a_step_too(tmp_path: Path) -> None:
    out = tmp_path / "forward.pcap"
    shifted(PLAIN_OK, out, 12, 3 * 86400.0)
    (s,) = json.loads(report(out))["sessions"]
    assert [st["frame"] for st in s["clock_steps"]] == [12]
    assert s["duration"] < 1 and s["verdict"]["code"] == "ok"


def test_reordering_by_less_than_a_second_is_not_a_step(tmp_path: Path) -> None:
    """Frames of two capture queues interleave out of order by milliseconds: not a step."""
    out = tmp_path / "reordered.pcap"
    shifted(PLAIN_OK, out, 9, -0.3)
    data = json.loads(report(out))
    (s,) = data["sessions"]
    assert s["clock_steps"] == [] and data["capture"]["clock_stepped_in_sessions"] == []
    assert "clock-step" not in [n["code"] for n in s["notes"]]
