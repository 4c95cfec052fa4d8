"""Our TLS timeline against Wireshark's, on the lab's real STARTTLS and port-465 captures.

For each sample with TLS: the frames that carry TLS records, and the plaintext handshake
messages with their frames, must be the ones `tshark -Y tls` shows for the same file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TLS_SAMPLES = [p for p in sorted(SAMPLES.glob("*.pcap"))
               if p.stem.split(".")[0] in {
                   "starttls-ok", "smtps-465-ok", "tls-client-silent", "tls-server-silent",
                   "tls-no-shared-cipher", "server-closes-on-clienthello", "ban-after-failure"}]

# Handshake message types of the kinds that are not the generic "tls-handshake".
HANDSHAKE_KIND = {"tls-client-hello": 1, "tls-server-hello": 2,
                  "tls-hello-retry-request": 2, "tls-certificate": 11}

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None,
                                  reason="tshark not installed (apt-get install tshark)")


def tshark_view(path: Path) -> tuple[set[int], set[tuple[int, int]]]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "tls", "-T", "fields",
         "-e", "frame.number", "-e", "tls.handshake.type"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    frames, handshakes = set(), set()
    for line in out.splitlines():
        frame, _, types = line.partition("\t")
        frames.add(int(frame))
        handshakes |= {(int(frame), int(t)) for t in types.split(",") if t}
    return frames, handshakes


def our_view(path: Path) -> tuple[set[int], set[tuple[int, int]]]:
    out = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", "-f", "json", str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    frames, handshakes = set(), set()
    for session in json.loads(out)["sessions"]:
        for e in session["events"]:
            if not e["kind"].startswith("tls-") or e["kind"] in ("tls-not-tls", "tls-desync"):
                continue
            frames.add(e["frame"])
            if e["kind"] in HANDSHAKE_KIND:
                handshakes.add((e["frame"], HANDSHAKE_KIND[e["kind"]]))
            elif e["kind"] == "tls-handshake":
                handshakes.add((e["frame"], e["fields"]["msg_type"]))
    return frames, handshakes


def test_the_lab_made_tls_samples() -> None:
    assert len(TLS_SAMPLES) >= 8, [p.name for p in TLS_SAMPLES]


@needs_tshark
@pytest.mark.parametrize("path", TLS_SAMPLES, ids=[p.name for p in TLS_SAMPLES])
def test_tls_records_and_handshake_messages_sit_where_tshark_sees_them(path: Path) -> None:
    their_frames, their_handshakes = tshark_view(path)
    our_frames, our_handshakes = our_view(path)
    assert their_handshakes, "tshark decoded no handshake: the sample is not what we think"
    assert our_handshakes == their_handshakes
    assert our_frames == their_frames
