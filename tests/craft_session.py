"""Crafted TCP conversations for pipeline tests: the cases no real stack makes on demand.

A ``Conversation`` tracks both sides' sequence numbers and builds scapy
packets; a test then reorders, repeats or drops them before writing the pcap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap


@dataclass
class Conversation:
    client: str = "192.0.2.10"
    server: str = "198.51.100.25"
    cport: int = 40000
    sport: int = 25
    cseq: int = 1000
    sseq: int = 5000
    time: float = 1_700_000_000.0
    packets: list[Packet] = field(default_factory=list)

    def _ip(self, src: str, dst: str) -> Packet:
        # Explicit MACs: without them scapy looks up routes and ARP for every packet.
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        if ":" in src:
            return eth / IPv6(src=src, dst=dst)
        return eth / IP(src=src, dst=dst)

    def _pkt(self, from_client: bool, flags: str, payload: bytes = b"",
             seq: int | None = None, step: float = 0.01) -> Packet:
        self.time += step
        if from_client:
            p = self._ip(self.client, self.server) / TCP(
                sport=self.cport, dport=self.sport, flags=flags,
                seq=(self.cseq if seq is None else seq) & 0xFFFFFFFF,
                ack=self.sseq & 0xFFFFFFFF if "A" in flags else 0)
        else:
            p = self._ip(self.server, self.client) / TCP(
                sport=self.sport, dport=self.cport, flags=flags,
                seq=(self.sseq if seq is None else seq) & 0xFFFFFFFF,
                ack=self.cseq & 0xFFFFFFFF if "A" in flags else 0)
        if payload:
            p = p / payload
        p.time = self.time
        self.packets.append(p)
        return p

    def handshake(self) -> Conversation:
        self._pkt(True, "S")
        self.cseq += 1
        self._pkt(False, "SA")
        self.sseq += 1
        self._pkt(True, "A")
        return self

    def client_sends(self, *parts: bytes, step: float = 0.01) -> list[Packet]:
        """Each part its own segment, as a client writing without coalescing."""
        out = []
        for part in parts:
            out.append(self._pkt(True, "PA", part, step=step))
            self.cseq += len(part)
        return out

    def server_sends(self, *parts: bytes, step: float = 0.01) -> list[Packet]:
        out = []
        for part in parts:
            out.append(self._pkt(False, "PA", part, step=step))
            self.sseq += len(part)
        return out

    def client_ack(self) -> Packet:
        return self._pkt(True, "A")

    def server_ack(self) -> Packet:
        return self._pkt(False, "A")

    def close(self, client_first: bool = True) -> None:
        first, second = (True, False) if client_first else (False, True)
        self._pkt(first, "FA")
        if first:
            self.cseq += 1
        else:
            self.sseq += 1
        self._pkt(second, "FA")
        if second:
            self.cseq += 1
        else:
            self.sseq += 1
        self._pkt(first, "A")

    def write(self, path: Path, packets: list[Packet] | None = None) -> Path:
        wrpcap(str(path), packets if packets is not None else self.packets)
        return path


def up_to_data(conv: Conversation | None = None) -> Conversation:
    """Handshake, banner, EHLO, MAIL, RCPT, DATA and its 354: a body goes next."""
    c = conv or Conversation()
    c.handshake()
    c.server_sends(b"220 mx.lab.example ESMTP Postfix\r\n")
    c.client_sends(b"EHLO client.lab.example\r\n")
    c.server_sends(b"250-mx.lab.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
    c.client_sends(b"MAIL FROM:<a@lab.example>\r\n")
    c.server_sends(b"250 2.1.0 Ok\r\n")
    c.client_sends(b"RCPT TO:<b@lab.example>\r\n")
    c.server_sends(b"250 2.1.5 Ok\r\n")
    c.client_sends(b"DATA\r\n")
    c.server_sends(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    return c


def up_to_354(conv: Conversation) -> Conversation:
    """MAIL, RCPT and DATA, each answered: the client may send a body next."""
    conv.client_sends(b"MAIL FROM:<a@b.example>\r\n")
    conv.server_sends(b"250 ok\r\n")
    conv.client_sends(b"RCPT TO:<c@d.example>\r\n")
    conv.server_sends(b"250 ok\r\n")
    conv.client_sends(b"DATA\r\n")
    conv.server_sends(b"354 go\r\n")
    return conv


def simple_session(conv: Conversation | None = None) -> Conversation:
    """A healthy plaintext session: banner, EHLO, one message, QUIT."""
    c = up_to_data(conv)
    c.client_sends(b"Subject: t\r\n\r\nhello\r\n.\r\n")
    c.server_sends(b"250 2.0.0 Ok: queued as 1234\r\n")
    c.client_sends(b"QUIT\r\n")
    c.server_sends(b"221 2.0.0 Bye\r\n")
    c.close()
    return c
