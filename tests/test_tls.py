"""TLS dissector tests: real handshakes from Python's ssl module, hand-built hellos for
fingerprints, and hostile bytes."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import ssl
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors import tls
from dissectors.tls import TlsParser
from tests.tls_fixtures import (
    NOT_AFTER,
    NOT_BEFORE,
    alpn_ext,
    client_hello_record,
    make_cert,
    run_tls,
    sni_ext,
    u16_list_ext,
    versions_ext,
)

APP = [("C", b"EHLO client.example\r\n"), ("S", b"250-mx.example\r\n250 8BITMIME\r\n")]


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls12(cert):
    return run_tls(cert, max_version=ssl.TLSVersion.TLSv1_2, app=APP, close=True)


@pytest.fixture(scope="module")
def tls13(cert):
    return run_tls(cert, max_version=ssl.TLSVersion.TLSv1_3, app=APP, close=True)


def feed(chunks, rng: random.Random | None = None, base: int = 1000, close=True):
    """Feed chunks in capture order, each cut into random pieces; return (parser, events).
    ``base`` is a non-zero stream offset, as after a STARTTLS exchange."""
    p = TlsParser()
    off = {"C": base, "S": base + 7}
    events = []
    for d, data in chunks:
        cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if rng else []
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            events += p.receive(d, data[a:b], off[d] + a)
        off[d] += len(data)
    if close:
        for d in "CS":
            events += p.close(d)
    return p, events


def seq(events, direction):
    """The events of one direction as short labels (kind, or handshake message name)."""
    out = []
    for e in events:
        if e.direction != direction:
            continue
        if isinstance(e, tls.Handshake | tls.EncryptedHandshake):
            out.append(e.name if isinstance(e, tls.Handshake) else e.what)
        else:
            out.append(e.kind)
    return out


# ---------------------------------------------------------------------------
# real handshakes


@pytest.mark.parametrize("seed", range(8))
def test_tls12_handshake(tls12, seed):
    p, events = feed(tls12.chunks, random.Random(seed))
    assert tls12.version == "TLSv1.2"
    assert seq(events, "C") == [
        "tls-client-hello",
        "ClientKeyExchange",
        "tls-ccs",
        "Finished",
        "tls-app-data",
        "tls-alert",
    ]
    assert seq(events, "S") == [
        "tls-server-hello",
        "tls-certificate",
        "ServerKeyExchange",
        "ServerHelloDone",
        "NewSessionTicket",
        "tls-ccs",
        "Finished",
        "tls-app-data",
        "tls-alert",
    ]
    ch = next(e for e in events if e.kind == "tls-client-hello")
    assert ch.sni == "mx.example"
    assert ch.start == 1005  # record header skipped: the message's own first byte
    assert ch.max_version == 0x0303
    assert ch.renegotiation_info and ch.extended_master_secret and ch.session_ticket
    sh = next(e for e in events if e.kind == "tls-server-hello")
    assert sh.version == 0x0303
    assert sh.openssl_name == tls12.cipher  # what the ssl module (OpenSSL) itself reports
    assert sh.suite_name.startswith("TLS_ECDHE_RSA_WITH_AES_256_GCM")
    assert sh.summary() == f"TLS ServerHello  TLS1.2  {tls12.cipher}"
    skx = next(e for e in events if getattr(e, "name", "") == "ServerKeyExchange")
    assert skx.group == 29 and skx.detail == "ECDHE x25519"
    certev = next(e for e in events if e.kind == "tls-certificate")
    leaf = certev.leaf
    assert certev.count == 1 and leaf.error is None
    assert leaf.subject == "CN=mx.example" and leaf.common_name == "mx.example"
    assert leaf.sans == ["mx.example", "mail.mx.example"]
    assert leaf.self_signed is True
    assert (leaf.key_type, leaf.key_bits) == ("RSA", 2048)
    assert (leaf.not_before, leaf.not_after) == (NOT_BEFORE, NOT_AFTER)
    assert leaf.valid_at(dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)) is True
    assert leaf.valid_at(dt.datetime(2035, 6, 1, tzinfo=dt.timezone.utc)) is False
    prog = p.progress
    assert prog.handshake_complete and not prog.handshake_inferred
    assert prog.version_name == "TLS1.2" and prog.cipher_suite == sh.cipher_suite
    assert prog.client.app_records == 1 and prog.server.app_records == 1
    # AES-GCM: 8 explicit nonce + plaintext + 16 tag
    assert prog.client.app_sizes == [8 + len(APP[0][1]) + 16]
    assert prog.server.app_sizes == [8 + len(APP[1][1]) + 16]
    alerts = [e for e in events if e.kind == "tls-alert"]
    assert [(a.encrypted, a.inferred, a.name, a.length) for a in alerts] == [
        (True, True, "close_notify", 26)
    ] * 2


@pytest.mark.parametrize("seed", range(8))
def test_tls13_handshake_inferred(tls13, seed):
    p, events = feed(tls13.chunks, random.Random(seed))
    assert tls13.version == "TLSv1.3"
    assert seq(events, "C") == [
        "tls-client-hello",
        "tls-ccs",
        "Finished",
        "tls-app-data",
        "tls-alert",
    ]
    s = seq(events, "S")
    # OpenSSL writes EncryptedExtensions, Certificate, CertificateVerify, Finished as 4 records
    assert s[:3] == ["tls-server-hello", "tls-ccs", "EncryptedExtensions..Finished"]
    assert s.count("EncryptedExtensions..Finished") == 4
    # after the client's Finished: 2 NewSessionTickets, then the reply (all look like app data)
    assert s[6:] == ["tls-app-data"] * 3 + ["tls-alert"]
    ch = next(e for e in events if e.kind == "tls-client-hello")
    assert ch.versions[:2] == [0x0304, 0x0303] and ch.sni == "mx.example"
    # OpenSSL 3.0.22 (bookworm-security) also offers 1.1 and 1.0; 3.0.19 does not
    assert ch.summary().startswith("TLS ClientHello  TLS1.3,1.2")
    assert "  SNI mx.example  " in ch.summary()
    assert ch.key_share_groups and ch.key_share_groups[0] == 29
    sh = next(e for e in events if e.kind == "tls-server-hello")
    assert sh.version == 0x0304 and sh.legacy_version == 0x0303
    assert sh.openssl_name == tls13.cipher
    ccs = [e for e in events if e.kind == "tls-ccs"]
    assert all(c.middlebox_compat for c in ccs)
    fin = [e for e in events if e.kind == "tls-encrypted-handshake" and e.direction == "C"]
    assert fin[0].inferred and "(encrypted, inferred)" in fin[0].summary()
    assert fin[0].length == 4 + 48 + 1 + 16  # SHA-384 Finished + content type + tag
    prog = p.progress
    assert prog.handshake_complete and prog.handshake_inferred
    assert prog.client.app_records == 1
    assert prog.server.app_records == 3
    server_app = [e for e in events if e.kind == "tls-app-data" and e.direction == "S"]
    assert [e.peer_app_records for e in server_app] == [0, 0, 1]  # tickets, then the reply
    assert prog.client.app_sizes == [len(APP[0][1]) + 1 + 16]
    alerts = [e for e in events if e.kind == "tls-alert"]
    assert [(a.name, a.inferred, a.length) for a in alerts] == [("close_notify", True, 19)] * 2


def test_split_invariance(tls12, tls13):
    """Where the segments were cut never changes what is seen."""
    for ex in (tls12, tls13):
        _, ref = feed(ex.chunks)
        for seed in range(20):
            _, got = feed(ex.chunks, random.Random(seed))
            assert got == ref
        one_byte = [(d, data[i : i + 1]) for d, data in ex.chunks for i in range(len(data))]
        assert feed(one_byte)[1] == ref


def test_several_records_in_one_call(tls12):
    """Each direction's whole stream in one receive() call."""
    p = TlsParser()
    events = []
    for d in "CS":
        events += p.receive(d, b"".join(b for dd, b in tls12.chunks if dd == d), 0)
    assert [e.kind for e in events].count("tls-app-data") == 2
    assert p.progress.handshake_complete


def test_retransmitted_bytes_do_not_duplicate(tls12):
    p = TlsParser()
    d, data = tls12.chunks[0]
    first = p.receive(d, data, 0)
    assert p.receive(d, data, 0) == []
    assert p.receive(d, data[-10:] + b"\x16", len(data) - 10) == []
    assert [e.kind for e in first] == ["tls-client-hello"]


def test_all_summaries_fit(tls12, tls13):
    for ex in (tls12, tls13):
        for e in feed(ex.chunks)[1]:
            assert len(e.summary()) <= 80 and "\n" not in e.summary()


def test_handshake_failure_alert(cert):
    """Client offers only a suite the server refuses: the server answers with an alert."""
    ex = run_tls(
        cert,
        max_version=ssl.TLSVersion.TLSv1_2,
        client_ciphers="AES128-SHA",
        server_ciphers="ECDHE+AESGCM",
    )
    assert ex.server_error and "NO_SHARED_CIPHER" in ex.server_error
    p, events = feed(ex.chunks, random.Random(1))
    ch = events[0]
    assert ch.kind == "tls-client-hello"
    assert ch.suite_names(openssl=True) == ["AES128-SHA", "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"]
    alert = next(e for e in events if e.kind == "tls-alert")
    assert (alert.direction, alert.fatal, alert.name) == ("S", True, "handshake_failure")
    assert alert.summary() == "TLS Alert fatal handshake_failure"
    assert p.progress.server.alert == "handshake_failure"
    assert p.progress.server.stage == "none" and p.progress.client.stage == "client-hello"
    assert not p.progress.handshake_complete


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_rejects_certificate(cert, version):
    """A verifying client refuses the self-signed certificate.  OpenSSL sends this alert in
    plaintext even in TLS 1.3 (it has not switched its write key yet), so it is readable."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    cctx = ssl.create_default_context()  # verifies against system CAs: ours is unknown
    cctx.maximum_version = version
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname="mx.example")
    server = sctx.wrap_bio(sin, sout, server_side=True)
    chunks = []
    for _ in range(6):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            for d, out, peer in (("C", cout, sin), ("S", sout, cin)):
                data = out.read()
                if data:
                    chunks.append((d, data))
                    peer.write(data)
    p, events = feed(chunks)
    alert = next(e for e in events if e.kind == "tls-alert")
    assert alert.direction == "C"
    assert not alert.encrypted and alert.name in ("unknown_ca", "bad_certificate")
    assert p.progress.client.alert == alert.name
    assert not p.progress.handshake_complete


def test_tls13_encrypted_alert_during_handshake(tls13):
    """Other stacks encrypt that alert: one 19-byte record where the client Finished
    should be.  Spliced into a real 1.3 flow: an inferred alert, handshake not complete."""
    server_flight = [c for c in tls13.chunks[:2]]
    assert [d for d, _ in server_flight] == ["C", "S"]
    alert = b"\x17\x03\x03\x00\x13" + bytes(19)
    p, events = feed([*server_flight, ("C", alert)])
    last = [e for e in events if e.direction == "C"][-1]
    assert (last.kind, last.encrypted, last.inferred, last.description) == (
        "tls-alert",
        True,
        True,
        None,
    )
    assert last.summary() == "TLS Alert (encrypted, inferred) 19 bytes"
    assert not p.progress.handshake_complete and p.progress.client.alert == "encrypted"


# ---------------------------------------------------------------------------
# not TLS, malformed, gaps


def test_plaintext_after_starttls_is_not_tls():
    p = TlsParser()
    events = p.receive("C", b"EHLO x\r\nMAIL FROM:<a@b>\r\n", 120)
    assert [e.kind for e in events] == ["tls-not-tls"]
    assert events[0].preview == "EHLO x\\r\\nMAIL FROM:<a@b>\\r\\n"
    assert events[0].start == 120
    assert events[0].summary() == "not TLS: EHLO x\\r\\nMAIL FROM:<a@b>\\r\\n"
    assert p.receive("C", b"\x16\x03\x01\x00\x05hello", 145) == []  # stopped: ignored
    assert p.progress.client.stopped == "not-tls"


def test_server_http_upgrade_is_not_tls():
    p = TlsParser()
    ev = p.receive("S", b"HTTP/1.1 101 Switching Protocols\r\n", 0)
    assert ev[0].kind == "tls-not-tls" and ev[0].preview.startswith("HTTP/1.1 101")


def test_not_tls_decided_on_first_bytes_and_at_close():
    p = TlsParser()
    assert [e.kind for e in p.receive("C", b"E", 0)] == ["tls-not-tls"]
    p = TlsParser()
    assert p.receive("C", b"\x16\x03", 0) == []  # could still be a record header
    ev = p.close("C")
    assert [(e.kind, e.truncated) for e in ev] == [("tls-malformed", True)]


def test_record_claiming_16mb_is_not_buffered():
    p = TlsParser()
    tracemalloc.start()
    ev = p.receive("S", b"\x17\x03\x03\xff\xff", 0)  # 65535 > 2^14 + 2048
    ev2 = TlsParser().receive("C", b"\x16\x03\x01\x40\x01", 0)  # 16385 + 2048 > limit? no
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [e.kind for e in ev] == ["tls-malformed"] and "65535" in ev[0].reason
    assert ev2 == []  # 16385 is within the ciphertext limit: waits for the body
    assert peak < 200_000
    assert p.receive("S", b"\x00" * 1000, 5) == [] and not p._sides["S"].buf


def test_handshake_message_claiming_16mb():
    body = b"\x01\xff\xff\xff" + b"\x00" * 20
    rec = b"\x16\x03\x01" + struct.pack("!H", len(body)) + body
    ev = TlsParser().receive("C", rec, 0)
    assert [e.kind for e in ev] == ["tls-malformed"]
    assert "16777215" in ev[0].reason


def test_truncated_client_hello_body_is_malformed():
    rec = client_hello_record([0x1301], [sni_ext("a.example")])
    bad = bytearray(rec)
    bad[5 + 4 + 2 + 32 + 1 + 1] = 0xFF  # cipher suite length overruns the message
    ev = TlsParser().receive("C", bytes(bad), 0)
    assert [e.kind for e in ev] == ["tls-malformed"]
    assert ev[0].reason.startswith("ClientHello:")


def test_bad_certificate_der_is_a_note():
    der = b"\x30\x03\x02\x01\x00"
    chain = len(der).to_bytes(3, "big") + der
    body = len(chain).to_bytes(3, "big") + chain
    hs = b"\x0b" + len(body).to_bytes(3, "big") + body
    ev = TlsParser().receive("S", b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs, 0)
    assert ev[0].kind == "tls-certificate" and ev[0].certificates[0].error
    assert ev[0].notes and ev[0].summary().startswith("TLS Certificate  unparsable")


def test_gap_then_resync(tls12):
    """Bytes missing inside an app-data record: say so, find the next record, go on."""
    c_stream = b"".join(b for d, b in tls12.chunks if d == "C")
    hs_end = sum(len(b) for d, b in tls12.chunks[:3] if d == "C")  # CH + CKE/CCS/Fin
    rec = b"\x17\x03\x03\x00\x20" + bytes(range(32))
    stream = c_stream[:hs_end] + rec * 5
    p = TlsParser()
    events = p.receive("C", stream[: hs_end + 40], 0)  # first record + 3 bytes of the second
    lost = 20
    events += p.gap("C", hs_end + 40, lost)
    events += p.receive("C", stream[hs_end + 40 + lost :], hs_end + 40 + lost)
    kinds = [e.kind for e in events]
    assert kinds[-6:] == ["tls-app-data", "tls-desync", "tls-desync"] + ["tls-app-data"] * 3
    gap_ev, resync = events[-5], events[-4]
    assert (gap_ev.resynced, gap_ev.missing) == (False, lost)
    assert resync.resynced and resync.end == hs_end + 2 * 37
    assert resync.skipped == 2 * 37 - (hs_end + 40 + lost - hs_end)
    assert p.progress.client.gaps == 1 and p.progress.client.app_records == 4


def test_gap_without_plausible_header_stays_silent():
    p = TlsParser()
    p.receive("S", b"\x17\x03\x03\x00\x04abcd", 0)
    ev = p.gap("S", 9, 100)
    ev += p.receive("S", bytes(500), 109)
    assert [e.kind for e in ev] == ["tls-desync"]


# ---------------------------------------------------------------------------
# fingerprints and SSLv2


def _fixed_hello():
    """GREASE in suites, extensions, groups and versions; every value known."""
    return client_hello_record(
        [0x0A0A, 0x1301, 0xC02F, 0x00FF],
        [
            (0x1A1A, b""),
            sni_ext("mx.example"),
            u16_list_ext(0x000A, [0x2A2A, 29, 23]),
            (0x000B, b"\x01\x00"),
            alpn_ext([b"h2", b"http/1.1"]),
            u16_list_ext(0x000D, [0x0403, 0x0804]),
            versions_ext([0x3A3A, 0x0304, 0x0303]),
        ],
    )


def test_ja3_fixed_hello():
    (hello,) = TlsParser().receive("C", _fixed_hello(), 0)
    # version 0x0303=771; suites 0x1301=4865, 0xc02f=49199, 0x00ff=255; extensions in wire
    # order without GREASE: 0 (SNI), 10, 11, 16 (ALPN), 13, 43; groups 29,23; formats 0.
    assert hello.ja3_string == "771,4865-49199-255,0-10-11-16-13-43,29-23,0"
    assert hello.ja3 == "6ce1f0d8deb4056b60a7b24ab0037f0a"
    assert hello.grease and hello.alpn == ["h2", "http/1.1"]
    assert hello.suite_names() == [
        "TLS_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    ]
    assert hello.suite_names(openssl=True)[1] == "ECDHE-RSA-AES128-GCM-SHA256"


def test_ja4_fixed_hello():
    (hello,) = TlsParser().receive("C", _fixed_hello(), 0)
    # t, 13 (supported_versions max), d (SNI), 03 suites, 06 extensions (GREASE out), h2
    b = hashlib.sha256(b"00ff,1301,c02f").hexdigest()[:12]
    c = hashlib.sha256(b"000a,000b,000d,002b_0403,0804").hexdigest()[:12]  # SNI, ALPN out
    assert hello.ja4 == f"t13d0306h2_{b}_{c}"
    assert (b, c) == ("938715873a05", "fb71836bce29")


def test_ja4_published_example():
    """The worked example of FoxIO's JA4 spec (technical_details/JA4.md)."""
    suites = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
    suites += [0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    sigs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005]
    order += [0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    bodies = {
        0x0000: sni_ext("example.com")[1],
        0x0010: alpn_ext([b"h2", b"http/1.1"])[1],
        0x000D: u16_list_ext(0x000D, sigs)[1],
        0x002B: versions_ext([0x0304, 0x0303])[1],
        0x000A: u16_list_ext(0x000A, [29, 23])[1],
        0x000B: b"\x01\x00",
        0x0033: b"\x00\x00",
    }
    exts = [(0x5A5A, b"")] + [(t, bodies.get(t, b"")) for t in order]
    rec = client_hello_record([0x7A7A, *suites], exts)
    (hello,) = TlsParser().receive("C", rec, 0)
    assert hello.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (None, "00"),
        (b"", "00"),
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"x", "xx"),
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
    ],
)
def test_ja4_alpn_rules(raw, want):
    assert tls._ja4_alpn(raw) == want


def test_sslv2_client_hello():
    specs = bytes.fromhex("01008000002f0000350000ff")  # one SSLv2-only spec
    challenge = bytes(16)
    body = b"\x01\x03\x01" + struct.pack("!HHH", len(specs), 0, len(challenge))
    body += specs + challenge
    rec = struct.pack("!H", 0x8000 | len(body)) + body
    p = TlsParser()
    ev = p.receive("C", rec, 0)
    assert [e.kind for e in ev] == ["tls-client-hello"]
    hello = ev[0]
    assert hello.sslv2 and hello.legacy_version == 0x0301
    assert hello.cipher_suites == [0x002F, 0x0035, 0x00FF]
    assert hello.notes == ["1 SSLv2-only cipher specs"]
    assert hello.summary() == "TLS ClientHello (SSLv2 format)  TLS1.0  no SNI  3 suites"
    # the next record in the same direction is ordinary TLS
    assert p.receive("C", b"\x15\x03\x01\x00\x02\x01\x00", len(rec))[0].name == "close_notify"


# ---------------------------------------------------------------------------
# never raise


def _check(events):
    for e in events:
        assert len(e.summary()) <= 80
        assert e.start <= e.end


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.sampled_from("CS"), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(chunks):
    p = TlsParser()
    off = {"C": 0, "S": 0}
    for d, data in chunks:
        _check(p.receive(d, data, off[d]))
        off[d] += len(data)
    _check(p.close("C") + p.close("S"))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_mutated_handshakes_never_raise(tls12, tls13, data):
    ex = data.draw(st.sampled_from([tls12, tls13]))
    chunks = [list(c) for c in ex.chunks]
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(chunks) - 1))
        blob = bytearray(chunks[i][1])
        if not blob:
            continue
        j = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "gap"]))
        if op == "flip":
            blob[j] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[j:]
        elif op == "insert":
            blob[j:j] = data.draw(st.binary(min_size=1, max_size=8))
        chunks[i][1] = bytes(blob)
        if op == "gap":
            chunks[i].append(j)
    p = TlsParser()
    off = {"C": 0, "S": 0}
    for d, blob, *gap in chunks:
        if gap:
            _check(p.gap(d, off[d], gap[0] + 1))
            off[d] += gap[0] + 1
        _check(p.receive(d, blob, off[d]))
        off[d] += len(blob)
    _check(p.close("C") + p.close("S"))


def test_import_is_fast():
    """Dissectors must not pull scapy in (about 1 s): the name tables are copied."""
    import subprocess
    import sys

    # In a fresh interpreter: other tests in this process import scapy themselves.
    probe = "import sys, dissectors.tls; print('scapy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_certificate_warnings_are_kept_not_printed():
    """A serial of 0 makes cryptography warn; the dissector keeps it on the CertInfo."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    der = bytearray(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    der[der.index(b"\x02\x01\x01") + 2] = 0  # serial 1 -> 0 (breaks the signature too)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = tls._decode_cert(bytes(der))
    assert info.error is None and info.serial == "0"
    assert any("serial number" in w for w in info.warnings)
    assert info.self_signed is False  # subject == issuer, but the signature no longer verifies
    assert (info.key_type, info.curve) == ("EC", "secp256r1")


def test_hello_retry_request(cert):
    """Server insists on secp384r1, the client's key share is x25519: HRR, a second
    ClientHello after a compat CCS (still plaintext), then a normal 1.3 handshake."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    sctx.set_ecdh_curve("secp384r1")
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname="mx.example")
    server = sctx.wrap_bio(sin, sout, server_side=True)
    chunks = []
    for _ in range(6):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            for d, out, peer in (("C", cout, sin), ("S", sout, cin)):
                data = out.read()
                if data:
                    chunks.append((d, data))
                    peer.write(data)
    p, events = feed(chunks, random.Random(3))
    assert seq(events, "C") == [
        "tls-client-hello",
        "tls-ccs",
        "tls-client-hello",
        "Finished",
    ]
    assert seq(events, "S")[:3] == ["tls-hello-retry-request", "tls-ccs", "tls-server-hello"]
    hrr = events[1]
    assert hrr.key_share_group == 24 and hrr.summary().endswith("group secp384r1")
    hellos = [e for e in events if e.kind == "tls-client-hello"]
    assert hellos[1].key_share_groups == [24]
    assert p.progress.handshake_complete and p.progress.handshake_inferred
