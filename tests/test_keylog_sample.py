"""Key-log decryption on the lab's real capture: Postfix, a Python ssl client logging keys.

Encrypted, the session closed in order; decrypted, the 550 to the RCPT shows, and the
inner commands and replies sit at the frames where tshark decrypts them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PCAP, KEYS = SAMPLES / "starttls-keylog.pcap", SAMPLES / "starttls-keylog.keys"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None,
                                reason="tshark not installed (apt-get install tshark)")


def report(*extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json", *extra,
                          str(PCAP)], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def tshark_smtp_frames() -> set[tuple[int, str]]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(PCAP), "-o", f"tls.keylog_file:{KEYS}", "-Y", "tls and smtp",
         "-T", "fields", "-e", "frame.number", "-e", "smtp.req.command",
         "-e", "smtp.response.code"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    seen = set()
    for line in out.splitlines():
        frame, cmds, codes = (line.split("\t") + ["", ""])[:3]
        seen |= {(int(frame), c.upper()) for c in cmds.split(",") if c}
        seen |= {(int(frame), c) for c in codes.split(",") if c}
    return seen


def test_decrypted_dialogue_sits_where_tshark_decrypts_it() -> None:
    session = report("--keylog", str(KEYS))["sessions"][0]
    ours = set()
    for e in session["events"]:
        if e["fields"].get("decrypted"):
            key = e["fields"].get("verb") or str(e["fields"].get("code"))
            ours.add((e["frame"], key))
    assert {k for _, k in ours} >= {"EHLO", "MAIL", "RCPT", "QUIT", "550", "221"}
    assert ours == tshark_smtp_frames()


def test_the_key_log_turns_an_encrypted_ok_into_the_rejection_it_was() -> None:
    assert report()["sessions"][0]["verdict"]["code"] == "ok"
    verdict = report("--keylog", str(KEYS))["sessions"][0]["verdict"]
    assert verdict["code"] == "smtp-rejected"
    assert "550" in verdict["summary"] and "nobody@lab.example" in verdict["summary"]


def test_a_decrypted_session_does_not_claim_its_dialogue_was_unreadable() -> None:
    """Encrypted, the ok says the capture cannot show acceptance; decrypted, that is
    no longer true, so neither the verdict nor a note may say it."""
    encrypted = report()["sessions"][0]
    assert "cannot show whether a message was accepted" in encrypted["verdict"]["summary"]
    decrypted = report("--keylog", str(KEYS))["sessions"][0]
    said = [decrypted["verdict"]["summary"], *(n["summary"] for n in decrypted["notes"])]
    assert not any("cannot show whether a message was accepted" in s for s in said), said
