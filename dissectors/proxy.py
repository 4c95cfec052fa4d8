"""The PROXY protocol header a load balancer sends before SMTP (HAProxy's v1 and v2).

A Postfix behind HAProxy or nginx (``smtpd_upstream_proxy_protocol = haproxy``) gets,
as the very first client bytes of every connection, a header naming the original
client: ``PROXY TCP4 203.0.113.5 198.51.100.25 51234 25\\r\\n`` (v1), or a 16-byte
binary preamble and the addresses (v2).  Read as SMTP it is a command before the
greeting (an "early talker"), and v2's signature even contains a ``QUIT`` line.

Sans-IO and stateless: the SMTP parser holds the client's first bytes, asks
:func:`judge` whether they are (or may become) a header, and :func:`decode` turns one
into an event.  Specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

INTERFACE:

    n = judge(data)             # > 0: a header of n bytes; 0: not one; -1: need more bytes
    ev = decode(data[:n], at)   # ProxyHeader (direction "C", stream offsets at .. at+n)
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the specification's own bound)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, address length
V2_MAX = V2_FIXED + 1024  # addresses and TLVs; a longer one is not believed

_V2_FAMILIES = {0x11: "TCP4", 0x12: "UDP4", 0x21: "TCP6", 0x22: "UDP6", 0x31: "UNIX-STREAM",
                0x32: "UNIX-DGRAM", 0x00: "UNSPEC"}


@dataclass(slots=True)
class ProxyHeader:
    """The original connection a proxy in front of the server reports."""

    kind: ClassVar[str] = "proxy-header"
    direction: str  # "C"
    start: int
    end: int
    version: int  # 1 or 2
    command: str  # "PROXY"; v2 also "LOCAL" (the proxy's own health check)
    protocol: str  # "TCP4", "TCP6", "UNKNOWN" (v1), "UNSPEC" (v2), ...
    source: str | None  # the original client, "203.0.113.5:51234" / "[2001:db8::5]:51234"
    destination: str | None  # the address the original client connected to
    malformed: bool = False  # recognised as a PROXY header, fields not understood

    def summary(self) -> str:
        if self.command == "LOCAL":
            return f"PROXY protocol v{self.version}: LOCAL (the proxy's own connection)"
        if self.source is None:
            return f"PROXY protocol v{self.version}: {self.protocol} (no addresses)"
        return (f"PROXY protocol v{self.version}: original client {self.source} -> "
                f"{self.destination}")


def judge(data: bytes) -> int:
    """Bytes of ``data``'s start that are a whole PROXY header; 0 when they are not one;
    -1 when they are the beginning of one (or too few to tell)."""
    if data[:6] == V1_PREFIX[: len(data[:6])]:
        if len(data) < len(V1_PREFIX):
            return -1
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        return -1 if len(data) < V1_MAX else 0
    if data[:12] == V2_SIGNATURE[: len(data[:12])]:
        if len(data) < V2_FIXED:
            return -1
        total = V2_FIXED + struct.unpack_from("!H", data, 14)[0]
        if data[12] >> 4 != 2 or total > V2_MAX:
            return 0
        return total if len(data) >= total else -1
    return 0


def decode(header: bytes, at: int, direction: str = "C") -> ProxyHeader:
    """``header``: exactly the bytes :func:`judge` counted, at stream offset ``at``."""
    end = at + len(header)
    if header.startswith(V1_PREFIX):
        return _v1(header, at, end, direction)
    return _v2(header, at, end, direction)


def _endpoint(addr: str, port: str | int) -> str | None:
    try:
        ip = ipaddress.ip_address(addr)
        n = int(port)
    except ValueError:
        return None
    if not 0 <= n <= 65535:
        return None
    return f"[{ip.compressed}]:{n}" if ip.version == 6 else f"{ip.compressed}:{n}"


def _v1(header: bytes, at: int, end: int, direction: str) -> ProxyHeader:
    words = header[len(V1_PREFIX):].rstrip(b"\r\n").decode("ascii", "replace").split(" ")
    protocol = words[0]
    if protocol in ("TCP4", "TCP6") and len(words) == 5:
        src, dst = _endpoint(words[1], words[3]), _endpoint(words[2], words[4])
        if src is not None and dst is not None:
            return ProxyHeader(direction, at, end, 1, "PROXY", protocol, src, dst)
    return ProxyHeader(direction, at, end, 1, "PROXY", protocol[:16], None, None,
                       malformed=protocol != "UNKNOWN")


def _v2(header: bytes, at: int, end: int, direction: str) -> ProxyHeader:
    command = {0: "LOCAL", 1: "PROXY"}.get(header[12] & 0x0F, f"0x{header[12] & 0x0F:x}")
    protocol = _V2_FAMILIES.get(header[13], f"0x{header[13]:02x}")
    body = header[V2_FIXED:]
    src = dst = None
    if protocol in ("TCP4", "UDP4") and len(body) >= 12:
        s, d, sp, dp = struct.unpack_from("!4s4sHH", body)
        src, dst = _endpoint(str(ipaddress.IPv4Address(s)), sp), \
            _endpoint(str(ipaddress.IPv4Address(d)), dp)
    elif protocol in ("TCP6", "UDP6") and len(body) >= 36:
        s, d, sp, dp = struct.unpack_from("!16s16sHH", body)
        src, dst = _endpoint(str(ipaddress.IPv6Address(s)), sp), \
            _endpoint(str(ipaddress.IPv6Address(d)), dp)
    malformed = command not in ("LOCAL", "PROXY") or (
        command == "PROXY" and protocol.startswith(("TCP", "UDP")) and src is None)
    return ProxyHeader(direction, at, end, 2, command, protocol, src, dst, malformed)
