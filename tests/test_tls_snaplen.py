"""Gaps inside TLS records whose header was captured: what a small snaplen does to TLS.

``tcpdump -s 96`` keeps the first few dozen bytes of every segment; reassembly reports
the rest as missing.  The 5-byte header of each cut record says where the next one starts,
so the parser reports the record as cut and keeps its place, instead of losing sync at
every segment.  Crafted byte streams check the exact events; a snaplen-cut copy of a
shipped sample (made with editcap) checks the whole pipeline and the verdict.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from dissectors.tls import AppData, CutRecord, Desync, TlsParser
from pcapsmtp.analyze import analyze
from pcapsmtp.timeline import Session

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def record(ctype: int, payload: bytes) -> bytes:
    return bytes([ctype, 3, 3]) + struct.pack("!H", len(payload)) + payload


def handshake(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def server_hello(version: int | None = None) -> bytes:
    """A ServerHello record: TLS 1.2 ECDHE-RSA-AES128-GCM, or 1.3 via supported_versions."""
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\xc0\x2f" + b"\x00"
    if version is not None:
        ext = struct.pack("!HHH", 0x002B, 2, version)
        body += struct.pack("!H", len(ext)) + ext
    return record(22, handshake(2, body))


def feed(p: TlsParser, direction: str, parts: list[bytes | int], at: int = 0) -> list:
    """Bytes (captured) and ints (that many bytes missing), in stream order."""
    events: list = []
    for part in parts:
        if isinstance(part, int):
            events += p.gap(direction, at, part)
            at += part
        else:
            events += p.receive(direction, part, at)
            at += len(part)
    return events


# ---------------------------------------------------------------------------
# the record layer


def test_a_gap_inside_a_record_keeps_sync_at_the_next_record():
    """Header and 4 payload bytes captured, the other 96 missing: the record is reported
    cut, and the next record (right after the gap) is parsed, not searched for."""
    app = record(23, bytes(100))
    nxt = record(23, bytes(30))
    events = feed(TlsParser(), "C", [app[:9], 96, nxt])
    assert [type(e) for e in events] == [CutRecord, AppData]
    cut, data = events
    assert (cut.start, cut.end, cut.content_type, cut.length, cut.missing, cut.what) == (
        0, 105, 23, 100, 96, "application data")
    assert cut.summary() == "TLS application data  100-byte record, 96 bytes not captured"
    assert (data.start, data.end, data.length) == (105, 140, 30)


def test_bytes_after_a_gap_inside_the_record_are_counted_not_parsed():
    """A hole in the middle of a record, its tail captured: the tail is the record's, and
    the record after it is parsed."""
    app = record(23, bytes(200))
    events = feed(TlsParser(), "S", [app[:50], 100, app[150:], record(21, b"\x01\x00")])
    assert [e.kind for e in events] == ["tls-cut-record", "tls-alert"]
    assert (events[0].missing, events[0].end) == (100, 205)
    assert (events[1].level, events[1].description) == (1, 0)


def test_a_gap_running_past_the_record_end_is_a_desync_for_the_rest():
    """The cut record is reported; the headers of what followed are in the gap too, so
    from its end the boundaries are lost (as without a header)."""
    app = record(23, bytes(40))
    events = feed(TlsParser(), "C", [app[:20], 25 + 60])
    assert [type(e) for e in events] == [CutRecord, Desync]
    cut, desync = events
    assert (cut.missing, cut.end) == (25, 45)
    assert (desync.start, desync.end, desync.missing, desync.resynced) == (45, 105, 60, False)


def test_a_cut_header_is_still_a_desync_but_a_whole_one_is_not():
    """Three header bytes say nothing of where the record ends; five do."""
    app = record(23, bytes(40))
    three = feed(TlsParser(), "C", [app[:3], 42])
    five = feed(TlsParser(), "C", [app[:5], 40])
    assert [e.kind for e in three] == ["tls-desync"]
    assert [e.kind for e in five] == ["tls-cut-record"]
    assert five[0].missing == 40


def test_a_cut_record_is_named_from_its_handshake_header_not_decoded():
    """A cut ClientHello is called one (the message header was captured) but yields no
    ClientHello event: its suites and SNI are in the missing bytes."""
    hello = record(22, handshake(1, bytes(300)))
    p = TlsParser()
    events = feed(p, "C", [hello[:30], len(hello) - 30])
    (cut,) = events
    assert (cut.what, cut.handshake_type, cut.content_type, cut.length) == (
        "ClientHello", 1, 22, 304)
    assert cut.summary() == "TLS ClientHello  304-byte record, 279 bytes not captured"
    assert p.progress.client.stage == "none"


def test_an_implausible_handshake_header_is_not_named():
    """Bytes that cannot start a message we know (type 99, or a 16 MB length) are just
    "handshake": encrypted bytes after a lost ChangeCipherSpec must not name a message."""
    for head in (b"\x63\x00\x00\x10", b"\x0b\xff\xff\xff"):
        (cut,) = feed(TlsParser(), "S", [record(22, head + bytes(60))[:9], 60])
        assert (cut.what, cut.handshake_type) == ("handshake", None)


def test_a_cut_message_that_runs_on_is_skipped_in_the_next_record():
    """A Certificate of 100 bytes in a 60-byte record, cut: its last 44 bytes open the
    next record, and the ServerHelloDone after them is read as one."""
    cert = handshake(11, bytes(100))
    rec1 = record(22, cert[:60])
    rec2 = record(22, cert[60:] + handshake(14, b""))
    events = feed(TlsParser(), "S", [rec1[:20], len(rec1) - 20, rec2])
    assert [e.kind for e in events] == ["tls-cut-record", "tls-handshake"]
    assert events[0].what == "Certificate"
    assert events[1].name == "ServerHelloDone"
    assert events[1].start == len(rec1) + 5 + 44


def test_the_direction_ending_inside_a_cut_record_says_so():
    p = TlsParser()
    events = feed(p, "C", [record(23, bytes(80))[:20], 30])
    events += p.close("C")
    (bad,) = events
    assert bad.kind == "tls-malformed" and bad.truncated
    assert (bad.start, bad.end) == (0, 50)
    assert "30 of its bytes not captured" in bad.reason


# ---------------------------------------------------------------------------
# resynchronising, and what the handshake's progress may claim


def test_after_a_desync_a_gap_ending_at_a_candidate_records_end_confirms_it():
    """After lost boundaries, a segment that starts with a header and is cut exactly at
    that record's end (a snaplen cut of a one-record segment) resynchronises; a cut that
    ends elsewhere confirms nothing."""
    app = record(23, bytes(50))
    p = TlsParser()
    events = feed(p, "S", [record(23, bytes(10))[:8], 100, app[:25], 30])
    assert [type(e) for e in events] == [CutRecord, Desync, Desync, CutRecord]
    resync, cut = events[2:]
    assert resync.resynced and (resync.start, resync.end, resync.skipped) == (108, 108, 0)
    assert (cut.start, cut.end, cut.missing) == (108, 163, 30)
    later = feed(p, "S", [record(23, bytes(5))], at=163)
    assert [e.kind for e in later] == ["tls-app-data"]

    other = TlsParser()
    events = feed(other, "S", [record(23, bytes(10))[:8], 100, app[:25], 31])
    assert [e.kind for e in events] == ["tls-cut-record", "tls-desync", "tls-desync"]


def test_cut_finished_records_do_not_complete_a_tls12_handshake():
    """Both ChangeCipherSpecs seen, both Finished records cut: the records are named, the
    handshake is not counted complete, and a later encrypted handshake record of the same
    side is not taken for its Finished."""
    p = TlsParser()
    feed(p, "S", [server_hello()])
    fin = record(22, bytes(40))
    c = feed(p, "C", [record(20, b"\x01"), fin[:15], 30])
    s = feed(p, "S", [record(20, b"\x01"), fin[:15], 30, fin], at=len(server_hello()))
    assert [e.kind for e in c] == ["tls-ccs", "tls-cut-record"]
    assert c[1].what == "encrypted Finished" and s[1].what == "encrypted Finished"
    assert s[2].kind == "tls-encrypted-handshake"
    assert s[2].what == "encrypted handshake message"
    assert not p.progress.handshake_complete
    assert not p.progress.client.finished and not p.progress.server.finished


def test_a_cut_tls13_client_finished_completes_nothing_and_is_not_inferred_again():
    """TLS 1.3: the client's first encrypted record is its Finished.  Cut, it is named so,
    the handshake is not inferred complete, and the client's next record is application
    data (not a second Finished)."""
    p = TlsParser()
    sh = server_hello(0x0304)
    feed(p, "S", [sh, record(23, bytes(500))])
    events = feed(p, "C", [record(23, bytes(69))[:20], 54, record(23, bytes(30))])
    assert [e.kind for e in events] == ["tls-cut-record", "tls-app-data"]
    assert events[0].what == "encrypted Finished"
    assert not p.progress.handshake_complete
    srv = feed(p, "S", [record(23, bytes(40))], at=len(sh) + 505)
    assert [e.kind for e in srv] == ["tls-app-data"]


def test_an_alert_after_lost_records_is_not_read_as_plaintext():
    """A TLS 1.2 server whose ChangeCipherSpec went into a desync: its 26-byte encrypted
    close_notify must not be read as a plaintext alert with a random description."""
    p = TlsParser()
    sh = server_hello()
    feed(p, "S", [sh, record(22, handshake(4, bytes(150)))[:20]])
    alert = record(21, bytes([0xE5, 0x21]) + bytes(24))
    events = feed(p, "S", [200, alert], at=len(sh) + 20)
    assert events[-1].kind == "tls-alert"
    assert events[-1].encrypted and events[-1].description is None


# ---------------------------------------------------------------------------
# a real capture, cut as tcpdump -s 96 would


def _cut(tmp_path: Path, name: str, snaplen: int) -> Session:
    if shutil.which("editcap") is None:
        pytest.skip("editcap (from tshark/wireshark-common) is not installed")
    out = tmp_path / f"{name}-s{snaplen}.pcap"
    subprocess.run(["editcap", "-F", "pcap", "-s", str(snaplen), str(SAMPLES / f"{name}.pcap"),
                    str(out)], check=True, capture_output=True, timeout=60)
    (session,) = analyze(str(out)).sessions
    return session


def test_a_snaplen_cut_starttls_session_shows_its_records(tmp_path: Path):
    """samples/starttls-ok.pcap (TLS 1.3, Postfix) cut to 96 bytes: ClientHello, ServerHello
    and every application-data record are shown with the bytes not captured; one desync
    is left (the server's first flight is one segment of several records); the verdict
    says the capture is incomplete and no handshake completion is claimed."""
    s = _cut(tmp_path, "starttls-ok", 96)
    cut = [e for e in s.events if e.kind == "tls-cut-record"]
    assert [(e.direction, e.fields["what"]) for e in cut[:2]] == [
        ("C", "ClientHello"), ("S", "ServerHello")]
    assert cut[0].text == "TLS ClientHello  512-byte record, 487 bytes not captured"
    assert sum(e.fields["what"] == "application data" for e in cut) == 12
    lost = [e for e in s.events if e.kind == "tls-desync" and e.fields.get("missing")]
    assert [(e.direction, e.fields["missing"]) for e in lost] == [("S", 1247)]
    assert s.verdict.code == "capture-incomplete"
    assert s.tls is not None and not s.tls.handshake_complete
    assert not [e for e in s.events if e.kind in ("tls-client-hello", "tls-certificate")]


def test_a_snaplen_cut_tls12_session_is_incomplete_not_an_alert(tmp_path: Path):
    """samples/tls-client-silent.pcap (TLS 1.2) cut to 200 bytes: the server's
    ChangeCipherSpec and Finished are in a cut segment, so its encrypted close_notify
    is an encrypted alert, not 'alert_33 during the handshake'; the verdict is
    capture-incomplete, and the cut Certificate yields no certificate details."""
    s = _cut(tmp_path, "tls-client-silent", 200)
    assert s.verdict.code == "capture-incomplete"
    (alert,) = [e for e in s.events if e.kind == "tls-alert"]
    assert alert.fields["encrypted"] and alert.fields["description"] is None
    assert [e.fields["what"] for e in s.events if e.kind == "tls-cut-record"][:2] == [
        "ClientHello", "Certificate"]
    assert not [e for e in s.events if e.kind == "tls-certificate"]
    assert "certificate-self-signed" not in {n.code for n in s.notes}
