"""Proxy prefaces before SMTP: the PROXY protocol header a load balancer sends (HAProxy's
v1 and v2), and the tunnel a client opens through a proxy (HTTP CONNECT, SOCKS4/4a/5).

A Postfix behind HAProxy or nginx (``smtpd_upstream_proxy_protocol = haproxy``) gets,
as the very first client bytes of every connection, a header naming the original
client: ``PROXY TCP4 203.0.113.5 198.51.100.25 51234 25\\r\\n`` (v1), or a 16-byte
binary preamble and the addresses (v2).  Read as SMTP it is a command before the
greeting (an "early talker"), and v2's signature even contains a ``QUIT`` line.

Sans-IO and stateless: the SMTP parser holds the client's first bytes, asks
:func:`judge` whether they are (or may become) a header, and :func:`decode` turns one
into an event.  Specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

A client behind an HTTP or SOCKS proxy (a corporate egress, a test harness, malware
using an open proxy) first asks the proxy for a tunnel to port 25, and the proxy answers
before the server's greeting comes through: ``CONNECT mx.example:25 HTTP/1.1`` then
``HTTP/1.1 200 Connection established``, or SOCKS's binary request and reply.  Captured
between client and proxy, both are SMTP's first bytes.  The tunnel request is judged like
the PROXY header; its reply, in the server's direction, by :func:`judge_reply` once the
request was seen.  Specifications: RFC 9110 9.3.6 (CONNECT), RFC 1928 (SOCKS5), the
SOCKS4 and 4A protocol notes.

INTERFACE:

    n = judge(data)             # > 0: a header of n bytes; 0: not one; -1: need more bytes
    ev = decode(data[:n], at)   # ProxyHeader or TunnelRequest (direction "C")
    n = judge_reply(protocol, data)        # the proxy's answer to a TunnelRequest
    ev = decode_reply(protocol, data[:n], at)   # TunnelReply (direction "S")
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


@dataclass(slots=True)
class TunnelRequest:
    """A client asking a proxy for a tunnel to the mail server (HTTP CONNECT, SOCKS)."""

    kind: ClassVar[str] = "proxy-tunnel"
    direction: str  # "C"
    start: int
    end: int
    protocol: str  # "HTTP CONNECT", "SOCKS5", "SOCKS4"
    target: str | None  # "mx.example:25", "198.51.100.25:25"

    def summary(self) -> str:
        return f"{self.protocol} tunnel request to {self.target or '(unreadable target)'}"


@dataclass(slots=True)
class TunnelReply:
    """The proxy's answer to a :class:`TunnelRequest`: whether the tunnel is open."""

    kind: ClassVar[str] = "proxy-tunnel-reply"
    direction: str  # "S"
    start: int
    end: int
    protocol: str
    granted: bool
    status: str  # "200 Connection established", "succeeded", "0x05 connection refused"

    def summary(self) -> str:
        return f"{self.protocol} proxy: {self.status}" + ("" if self.granted else " (refused)")


HTTP_CONNECT = b"CONNECT "
HTTP_MAX = 8192  # a request or reply head longer than this is not believed
_HEAD_END = b"\r\n\r\n"


def _http_head(data: bytes, prefix: bytes) -> int:
    """Length of an HTTP head starting with ``prefix`` (through its blank line), 0 when
    ``data`` is not one, -1 while it may still become one."""
    if data[: len(prefix)] != prefix[: len(data[: len(prefix)])]:
        return 0
    end = data.find(_HEAD_END, 0, HTTP_MAX)
    if end >= 0:
        return end + 4
    return -1 if len(data) < HTTP_MAX else 0


def _socks5_request(data: bytes) -> int:
    """The client's SOCKS5 greeting (05, n, n methods) and its CONNECT request."""
    if len(data) < 2:
        return -1
    n = data[1]
    if n == 0 or n > 16:
        return 0
    at = 2 + n
    if len(data) < at + 5:
        return -1
    if data[at] != 5 or data[at + 1] != 1 or data[at + 2] != 0:
        return 0
    size = _socks5_address_size(data, at + 3)
    if size <= 0:
        return size
    end = at + 3 + size + 2
    return end if len(data) >= end else -1


def _socks5_address_size(data: bytes, at: int) -> int:
    atyp = data[at]
    if atyp == 1:
        return 5
    if atyp == 4:
        return 17
    if atyp == 3:
        return 2 + data[at + 1] if len(data) > at + 1 else -1
    return 0


def _socks4_request(data: bytes) -> int:
    """04 01 port(2) ip(4) userid NUL [host NUL when ip is 0.0.0.x: SOCKS4a]."""
    if len(data) < 2:
        return -1
    if data[1] != 1:
        return 0
    if len(data) < 9:
        return -1
    end = data.find(b"\0", 8, 8 + 256)
    if end < 0:
        return -1 if len(data) < 8 + 256 else 0
    if data[4:7] == b"\0\0\0" and data[7] != 0:  # 4a: a host name follows
        host_end = data.find(b"\0", end + 1, end + 1 + 256)
        if host_end < 0:
            return -1 if len(data) < end + 257 else 0
        return host_end + 1
    return end + 1


def judge(data: bytes) -> int:
    """Bytes of ``data``'s start that are a whole PROXY header or tunnel request; 0 when
    they are not one; -1 when they are the beginning of one (or too few to tell)."""
    if not data:
        return -1
    first = data[0]
    if first == 0x43:  # "C"
        return _http_head(data, HTTP_CONNECT)
    if first == 5:
        return _socks5_request(data)
    if first == 4:
        return _socks4_request(data)
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


def decode(header: bytes, at: int, direction: str = "C") -> ProxyHeader | TunnelRequest:
    """``header``: exactly the bytes :func:`judge` counted, at stream offset ``at``."""
    end = at + len(header)
    if header.startswith(HTTP_CONNECT):
        line = header.split(b"\r\n", 1)[0].decode("ascii", "replace").split(" ")
        target = line[1][:300] if len(line) >= 2 else None
        return TunnelRequest(direction, at, end, "HTTP CONNECT", target)
    if header[0] == 5:
        req = 2 + header[1]
        return TunnelRequest(direction, at, end, "SOCKS5", _socks5_target(header, req + 3))
    if header[0] == 4:
        port = struct.unpack_from("!H", header, 2)[0]
        if header[4:7] == b"\0\0\0" and header[7] != 0:
            host = header[header.index(b"\0", 8) + 1:-1].decode("ascii", "replace")[:255]
            return TunnelRequest(direction, at, end, "SOCKS4a", f"{host}:{port}")
        return TunnelRequest(direction, at, end, "SOCKS4",
                             _endpoint(str(ipaddress.IPv4Address(header[4:8])), port))
    if header.startswith(V1_PREFIX):
        return _v1(header, at, end, direction)
    return _v2(header, at, end, direction)


def _socks5_target(data: bytes, at: int) -> str | None:
    atyp = data[at]
    if atyp == 1:
        addr = str(ipaddress.IPv4Address(data[at + 1:at + 5]))
        return _endpoint(addr, struct.unpack_from("!H", data, at + 5)[0])
    if atyp == 4:
        addr = str(ipaddress.IPv6Address(data[at + 1:at + 17]))
        return _endpoint(addr, struct.unpack_from("!H", data, at + 17)[0])
    n = data[at + 1]
    host = data[at + 2:at + 2 + n].decode("ascii", "replace")
    return f"{host}:{struct.unpack_from('!H', data, at + 2 + n)[0]}"


_SOCKS5_REPLIES = {0: "succeeded", 1: "general failure", 2: "not allowed by ruleset",
                   3: "network unreachable", 4: "host unreachable", 5: "connection refused",
                   6: "TTL expired", 7: "command not supported", 8: "address type not supported"}
_SOCKS4_REPLIES = {0x5A: "granted", 0x5B: "rejected or failed", 0x5C: "no identd",
                   0x5D: "identd mismatch"}


def judge_reply(protocol: str, data: bytes) -> int:
    """Bytes of the server direction's start that are the proxy's answer to a tunnel
    request of ``protocol``; 0 when they are not one; -1 while they may become one."""
    if protocol == "HTTP CONNECT":
        return _http_head(data, b"HTTP/1.")
    if protocol == "SOCKS5":  # method choice (05 mm), then the reply (05 rr 00 atyp addr port)
        if len(data) < 2:
            return -1
        if data[0] != 5 or len(data) >= 3 and data[2] != 5:
            return 0
        if len(data) < 7:
            return -1
        size = _socks5_address_size(data, 5)
        if size <= 0:
            return size
        end = 5 + size + 2
        return end if len(data) >= end else -1
    if protocol.startswith("SOCKS4"):
        if data[:1] not in (b"", b"\0"):
            return 0
        return 8 if len(data) >= 8 else -1
    return 0


def decode_reply(protocol: str, reply: bytes, at: int) -> TunnelReply:
    """``reply``: exactly the bytes :func:`judge_reply` counted, at stream offset ``at``."""
    end = at + len(reply)
    if protocol == "HTTP CONNECT":
        status = reply.split(b"\r\n", 1)[0].decode("ascii", "replace").partition(" ")[2]
        return TunnelReply("S", at, end, protocol, status[:3] == "200", status[:120])
    if protocol == "SOCKS5":
        code = reply[3]
        return TunnelReply("S", at, end, protocol, code == 0,
                           _SOCKS5_REPLIES.get(code, f"reply 0x{code:02x}"))
    code = reply[1]
    return TunnelReply("S", at, end, protocol, code == 0x5A,
                       _SOCKS4_REPLIES.get(code, f"reply 0x{code:02x}"))


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
