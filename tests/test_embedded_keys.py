"""TLS keys a pcapng capture carries itself (Decryption Secrets Blocks).

Wireshark users share decryptable captures with `editcap --inject-secrets tls,KEYS`: the
key log travels inside the file.  The native engine cannot decrypt, so the report says
the keys are there and that `--engine tshark` uses them; the tshark engine then decrypts
with them as it does with `--keylog`.  The keys themselves are never shown.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pcapsmtp.capture import open_capture
from tests.craft_pcap import ng_block, ng_epb, ng_idb, ng_shb

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PCAP, KEYS = SAMPLES / "starttls-keylog.pcap", SAMPLES / "starttls-keylog.keys"
SECRET = "3f" * 48  # a master secret that must never reach a report
KEY_LOG = (f"# written by a test\n\nCLIENT_RANDOM {'ab' * 32} {SECRET}\n"
           f"CLIENT_RANDOM {'cd' * 32} {SECRET}\n").encode()


def dsb(kind: int, data: bytes) -> bytes:
    return ng_block(10, struct.pack("<II", kind, len(data)) + data)


def capture_with(*blocks: bytes) -> bytes:
    frame = bytes(Ether() / IP(src="192.0.2.1", dst="198.51.100.2")
                  / TCP(sport=40000, dport=25, flags="PA") / b"EHLO x\r\n")
    return ng_shb() + b"".join(blocks) + ng_idb(1) + ng_epb(0, 1_700_000_000_000_000, frame)


def run(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "pcapsmtp", "analyze", *args],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("pure", ["", "1"])
def test_key_log_lines_are_counted_by_both_readers(tmp_path: Path, pure: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAPSMTP_PURE_PYTHON", pure)
    path = tmp_path / "keys.pcapng"
    path.write_bytes(capture_with(dsb(0x544C534B, KEY_LOG),  # TLS: two key lines
                                  dsb(0x5353484B, b"SSH secrets\nmore\n"),  # SSH: not ours
                                  ng_block(10, b"\0\0")))  # too short to hold a header
    from pcapsmtp.analyze import analyze

    result = analyze(str(path))
    assert result.capture.tls_keys == 2
    assert result.capture.packets == 1 and len(result.sessions) == 1


def test_report_says_keys_are_there_and_shows_none(tmp_path: Path) -> None:
    path = tmp_path / "keys.pcapng"
    path.write_bytes(capture_with(dsb(0x544C534B, KEY_LOG)))
    text = run(str(path))
    assert "keys: 2 TLS key-log lines embedded in the capture: `--engine tshark` decrypts" \
        in text
    assert json.loads(run("-f", "json", str(path)))["capture"]["tls_keys_embedded"] == 2
    for fmt in ("text", "json", "markdown", "html"):
        out = run("-f", fmt, str(path))
        assert SECRET not in out and "ab" * 32 not in out, fmt
        assert "embedded" in out, fmt


def test_without_secrets_no_keys_line() -> None:
    assert "keys:" not in run(str(SAMPLES / "tls-client-silent.pcap"))
    with open_capture(str(PCAP)) as reader:
        for _ in reader:
            pass
        assert reader.info.tls_keys == 0


@pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("editcap") is None,
                    reason="tshark and editcap not installed (apt-get install tshark)")
def test_tshark_engine_decrypts_with_the_embedded_keys(tmp_path: Path) -> None:
    """The lab's real key-log capture, its keys injected by Wireshark's editcap: the same
    decrypted dialogue as with --keylog and the separate key file."""
    injected = tmp_path / "injected.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{KEYS}", str(PCAP), str(injected)],
                   check=True, capture_output=True, timeout=60)
    assert "`--engine tshark` decrypts" in run(str(injected))

    def decrypted(*args: str) -> list[tuple[int, str]]:
        session = json.loads(run("-f", "json", "--engine", "tshark", *args))["sessions"][0]
        return [(e["frame"], e["text"]) for e in session["events"]
                if e["fields"].get("decrypted")]

    inside = decrypted(str(injected))
    assert inside == decrypted("--keylog", str(KEYS), str(PCAP))
    assert any("550" in text for _, text in inside)  # the reply only decryption shows
    assert "used to decrypt" in run("--engine", "tshark", str(injected))
