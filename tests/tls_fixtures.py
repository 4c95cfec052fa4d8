"""Real TLS bytes for the TLS dissector tests, made at test time.

Python's ``ssl`` module runs both ends over memory BIOs; we record what each
side wrote, in the order it was written, as a capture would see it.  The
certificate is self-signed, made with ``cryptography`` so no file is shipped.
Also: a hand-assembled ClientHello builder for fingerprint tests, where every
byte must be known to reason about the JA3/JA4 strings.
"""

from __future__ import annotations

import datetime as dt
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

Chunk = tuple[str, bytes]  # ("C" or "S", bytes that side wrote)

NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
NOT_AFTER = dt.datetime(2034, 1, 1, tzinfo=dt.timezone.utc)


def make_cert(tmp: Path, cn: str = "mx.example", key_type: str = "rsa") -> tuple[Path, Path]:
    """A self-signed certificate with CN and SANs; returns (cert.pem, key.pem)."""
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName("mail." + cn)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{cn}-{key_type}.pem", tmp / f"{cn}-{key_type}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Exchange:
    chunks: list[Chunk]
    client_error: str | None = None
    server_error: str | None = None
    cipher: str | None = None  # as the client's ssl object reports it
    version: str | None = None


def run_tls(
    cert: tuple[Path, Path],
    *,
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    client_ciphers: str | None = None,
    server_ciphers: str | None = None,
    sni: str | None = "mx.example",
    app: list[Chunk] = (),
    close: bool = False,
) -> Exchange:
    """Handshake client and server over memory BIOs, then send ``app`` messages and
    optionally close_notify from both sides.  Every write is recorded as a chunk."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    sctx.maximum_version = max_version
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.maximum_version = max_version
    if client_ciphers:
        cctx.set_ciphers(client_ciphers)
    if server_ciphers:
        sctx.set_ciphers(server_ciphers)
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname=sni)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    ex = Exchange([])

    def pump() -> None:
        for name, out, peer_in in (("C", cout, sin), ("S", sout, cin)):
            data = out.read()
            if data:
                ex.chunks.append((name, data))
                peer_in.write(data)

    done = {"C": False, "S": False}
    for _ in range(20):
        for name, obj in (("C", client), ("S", server)):
            if done[name]:
                continue
            try:
                obj.do_handshake()
                done[name] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as exc:
                done[name] = True
                setattr(ex, "client_error" if name == "C" else "server_error", str(exc))
            pump()
        if all(done.values()):
            break
    if ex.client_error or ex.server_error:
        pump()
        return ex
    ex.cipher, ex.version = client.cipher()[0], client.version()
    for name, data in app:
        writer, reader = (client, server) if name == "C" else (server, client)
        writer.write(data)
        pump()
        try:
            reader.read(65536)  # also processes NewSessionTickets on the client
        except ssl.SSLWantReadError:
            pass
        pump()
    if close:
        for obj in (client, server):
            try:
                obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            pump()
    return ex


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _u16s(values: list[int]) -> bytes:
    raw = b"".join(struct.pack("!H", v) for v in values)
    return struct.pack("!H", len(raw)) + raw


def client_hello_record(
    suites: list[int],
    extensions: list[tuple[int, bytes]],
    legacy_version: int = 0x0303,
    record_version: int = 0x0301,
) -> bytes:
    """A ClientHello record assembled by hand (random and session id are fixed bytes)."""
    body = struct.pack("!H", legacy_version) + bytes(range(32)) + b"\x00"
    body += _u16s(suites) + b"\x01\x00"
    exts = b"".join(_ext(t, b) for t, b in extensions)
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, record_version, len(hs)) + hs


def sni_ext(name: str) -> tuple[int, bytes]:
    raw = name.encode()
    entry = b"\x00" + struct.pack("!H", len(raw)) + raw
    return 0x0000, struct.pack("!H", len(entry)) + entry


def alpn_ext(protos: list[bytes]) -> tuple[int, bytes]:
    raw = b"".join(bytes([len(p)]) + p for p in protos)
    return 0x0010, struct.pack("!H", len(raw)) + raw


def u16_list_ext(etype: int, values: list[int]) -> tuple[int, bytes]:
    return etype, _u16s(values)


def versions_ext(values: list[int]) -> tuple[int, bytes]:
    raw = b"".join(struct.pack("!H", v) for v in values)
    return 0x002B, bytes([len(raw)]) + raw
