"""The TLS dissector's speed-ups hold what the slower code they replaced did: the name
helpers (table first, then GREASE and hex), the cached certificate copies, and the
_Reader shortcuts (vector, skip, u16_vector) against sub() followed by reading it all."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dissectors import tls
from dissectors.tls import _Reader, _Short
from tests.tls_fixtures import make_cert


@pytest.mark.parametrize(
    ("fn", "value", "want"),
    [
        (tls.suite_name, 0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        (tls.suite_name, 0x2A2A, "GREASE(0x2a2a)"),
        (tls.suite_name, 0xFEFE, "0xfefe"),
        (tls.group_name, 29, "x25519"),
        (tls.group_name, 0x0A0A, "GREASE"),
        (tls.group_name, 0x7777, "0x7777"),
        (tls.extension_name, 0x000A, "supported_groups"),
        (tls.extension_name, 0xFAFA, "GREASE"),
        (tls.extension_name, 0x7777, "0x7777"),
    ],
)
def test_name_helpers(fn, value, want):
    assert fn(value) == want


def test_no_grease_value_is_in_the_name_tables():
    """The helpers look the tables up before testing for GREASE: right only while no
    GREASE value is a key there."""
    from dissectors import tls_names

    for table in (tls_names.IANA_SUITES, tls_names.GROUPS, tls_names.EXTENSIONS):
        assert not [v for v in table if tls.is_grease(v)]


def test_cached_certificate_is_an_equal_copy_with_lists_of_its_own(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem, _ = make_cert(tmp_path, cn="cache.example")
    der = x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    tls._CERT_CACHE.clear()
    first = tls._decode_cert(der)
    assert first.sans and first.common_name == "cache.example"
    first.sans.append("changed.example")
    first.warnings.append("changed")
    second = tls._decode_cert(der)  # from the cache
    assert "changed.example" not in second.sans and "changed" not in second.warnings
    third = tls._decode_cert(der)
    assert second == third and second.sans is not third.sans
    assert second.warnings is not third.warnings
    # every field came along (the copy is made positionally from all of them)
    for f in dataclasses.fields(tls.CertInfo):
        if f.name not in ("sans", "warnings"):
            assert getattr(second, f.name) == getattr(first, f.name), f.name


def _slow(data: bytes, len_size: int, how: str):
    """What the shortcuts replaced: a sub-reader, then all of it read."""
    r = _Reader(data)
    sub = r.sub(len_size)
    if how == "vector":
        out = sub.take(sub.left)
    elif how == "skip":
        out = sub.left
    else:
        if sub.left % 2:
            raise _Short("odd length in a list of 16-bit values")
        raw = sub.take(sub.left)
        out = list(struct.unpack(f">{len(raw) // 2}H", raw))
    return out, r.pos


def _fast(data: bytes, len_size: int, how: str):
    r = _Reader(data)
    return getattr(r, how)(len_size), r.pos


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except _Short as exc:
        return "short", str(exc)


@given(
    data=st.binary(max_size=40),
    len_size=st.sampled_from([1, 2, 3]),
    how=st.sampled_from(["vector", "skip", "u16_vector"]),
)
def test_reader_shortcuts_match_sub_then_read(data, len_size, how):
    assert _outcome(_fast, data, len_size, how) == _outcome(_slow, data, len_size, how)


def test_reader_shortcut_errors_name_the_shortfall():
    assert _outcome(_fast, b"\x00\x05ab", 2, "vector") == ("short", "vector of 5 bytes, 2 left")
    assert _outcome(_fast, b"\x00", 2, "skip") == ("short", "needs 2 bytes, 1 left")
    assert _outcome(_fast, b"\x03abc", 1, "u16_vector") == (
        "short", "odd length in a list of 16-bit values")
    assert _fast(b"\x04\x00\x1d\x00\x17rest", 1, "u16_vector") == ([29, 23], 5)
