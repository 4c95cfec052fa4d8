"""Write a large synthetic SMTP capture for the benchmark.

Sessions are interleaved (several open at once, as on a busy MX): plaintext
ones carry a message body in full-size segments, STARTTLS ones carry a real
TLS 1.2 handshake made once with Python's ssl module, then application data
records.  Packets are written with struct, not scapy: scapy would take
minutes to build a few hundred thousand packets.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import random
import ssl
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

MSS = 1448
ETH = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"


def tls_handshake() -> tuple[list[bytes], list[bytes]]:
    """Real TLS 1.2 flights (client, server) from Python's ssl module over memory BIOs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.bench.example")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as tmp:
        cpath, kpath = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cpath, kpath)
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(cin, cout, server_hostname="mx.bench.example")
    srv = sctx.wrap_bio(sin, sout, server_side=True)
    flights: tuple[list[bytes], list[bytes]] = ([], [])
    for _ in range(10):
        for obj, out, peer_in, log in ((cli, cout, sin, flights[0]),
                                       (srv, sout, cin, flights[1])):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            data = out.read()
            if data:
                log.append(data)
                peer_in.write(data)
    cli.write(b"EHLO client.bench.example\r\n")
    flights[0].append(cout.read())
    sin.write(flights[0][-1])
    srv.read(4096)
    srv.write(b"250-mx.bench.example\r\n250 PIPELINING\r\n")
    flights[1].append(sout.read())
    return flights


class Writer:
    """A classic pcap file with Ethernet/IPv4/TCP frames."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.packets = 0

    def frame(self, t: float, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
              ack: int, flags: int, payload: bytes = b"") -> None:
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                          5 << 4, flags, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000,
                         64, 6, 0, src, dst)
        data = ETH + ip + tcp + payload
        sec = int(t)
        self.fh.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(data), len(data)))
        self.fh.write(data)
        self.packets += 1

    def close(self) -> None:
        self.fh.close()


def session_packets(i: int, start: float, tls: tuple[list[bytes], list[bytes]] | None,
                    body_segments: int) -> Iterator[tuple]:
    """(time, src, sport, dst, dport, seq, ack, flags, payload) for one session."""
    cli = ipaddress.IPv4Address("10.0.0.0") + (i % 60000) + 1
    c, s = cli.packed, ipaddress.IPv4Address("198.51.100.25").packed
    cp, sp = 1024 + i % 60000, 25
    cseq, sseq = random.getrandbits(32), random.getrandbits(32)
    t = start
    yield t, c, cp, s, sp, cseq, 0, 0x02, b""
    yield t + 0.001, s, sp, c, cp, sseq, cseq + 1, 0x12, b""
    cseq += 1
    sseq += 1
    t += 0.002
    yield t, c, cp, s, sp, cseq, sseq, 0x10, b""
    dialogue: list[tuple[str, bytes]] = [
        ("S", b"220 mx.bench.example ESMTP\r\n"), ("C", b"EHLO client.bench.example\r\n"),
        ("S", b"250-mx.bench.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")]
    if tls:
        dialogue += [("C", b"STARTTLS\r\n"), ("S", b"220 2.0.0 Ready to start TLS\r\n")]
        for k in range(max(len(tls[0]), len(tls[1]))):
            if k < len(tls[0]):
                dialogue.append(("C", tls[0][k]))
            if k < len(tls[1]):
                dialogue.append(("S", tls[1][k]))
    else:
        body = (b"Subject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * (body_segments * MSS // 78)
        dialogue += [("C", b"MAIL FROM:<a@bench.example>\r\nRCPT TO:<b@bench.example>\r\n"
                           b"DATA\r\n"),
                     ("S", b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>"
                           b"\r\n"),
                     ("C", body + b".\r\n"), ("S", b"250 2.0.0 Ok: queued\r\n"),
                     ("C", b"QUIT\r\n"), ("S", b"221 2.0.0 Bye\r\n")]
    for who, data in dialogue:
        for off in range(0, len(data), MSS):
            chunk = data[off:off + MSS]
            t += 0.0005
            if who == "C":
                yield t, c, cp, s, sp, cseq, sseq, 0x18, chunk
                cseq += len(chunk)
            else:
                yield t, s, sp, c, cp, sseq, cseq, 0x18, chunk
                sseq += len(chunk)
        t += 0.0005
        if who == "C":
            yield t, s, sp, c, cp, sseq, cseq, 0x10, b""
        else:
            yield t, c, cp, s, sp, cseq, sseq, 0x10, b""
    yield t + 0.001, c, cp, s, sp, cseq, sseq, 0x11, b""
    yield t + 0.002, s, sp, c, cp, sseq, cseq + 1, 0x11, b""
    yield t + 0.003, c, cp, s, sp, cseq + 1, sseq + 1, 0x10, b""


def write(path: Path, packets: int, concurrency: int = 50, seed: int = 1) -> int:
    """Interleave sessions until about ``packets`` packets are written."""
    random.seed(seed)
    tls = tls_handshake()
    out = Writer(path)
    active: list[Iterator[tuple]] = []
    i, t = 0, 1_800_000_000.0
    while out.packets < packets or active:
        while len(active) < concurrency and out.packets < packets:
            i += 1
            active.append(session_packets(i, t, tls if i % 3 == 0 else None,
                                          body_segments=random.randint(1, 40)))
        gen = active[random.randrange(len(active))]
        pkt = next(gen, None)
        if pkt is None:
            active.remove(gen)
            continue
        t += 0.0001
        out.frame(t, *pkt[1:])
    out.close()
    return out.packets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path", type=Path)
    ap.add_argument("--packets", type=int, default=300_000)
    args = ap.parse_args()
    n = write(args.path, args.packets)
    print(f"wrote {n:,} packets to {args.path}")


if __name__ == "__main__":
    main()
