"""Build synthetic session timelines for rule tests, one readable line per event.

    s = (SessionBuilder().syn().syn_ack().banner(220, "mx ESMTP")
         .cmd("EHLO x").reply(250, "mx", caps=["PIPELINING"]).quit().fin("C").build())

Every event gets the next frame number and ``step`` seconds after the previous
one (``wait(60)`` inserts a silence).  Replies answer the oldest unanswered
command, as the SMTP dissector pairs them, unless ``answers=`` says otherwise.
The field names follow ``pcapsmtp/timeline.py`` and ``dissectors/tls.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from dissectors.tls import CertInfo, Progress
from pcapsmtp.jsonable import plain
from pcapsmtp.reassembly import ConnectionStats
from pcapsmtp.timeline import Event, Session

T0 = 1_700_000_000.0


class SessionBuilder:
    def __init__(self, client: tuple[str, int] = ("203.0.113.40", 59854),
                 server: tuple[str, int] = ("198.51.100.26", 25), start: float = T0,
                 step: float = 0.01, first_frame: int = 1, implicit_tls: bool = False,
                 session_id: int = 1) -> None:
        self.client, self.server = client, server
        self.start = self.t = start
        self.step = step
        self.frame = first_frame - 1
        self.implicit_tls = implicit_tls
        self.tls = implicit_tls
        self.id = session_id
        self.events: list[Event] = []
        self.pending: list[str] = []  # verbs awaiting a reply
        self.stats = ConnectionStats()
        self.syn_seen = False
        self.progress = Progress()

    # -- plumbing ------------------------------------------------------------------------
    def wait(self, seconds: float) -> SessionBuilder:
        self.t += seconds
        return self

    def add(self, direction: str, kind: str, text: str, same_frame: bool = False,
            first_frame: int | None = None, **fields: Any) -> SessionBuilder:
        if not same_frame or self.frame == 0:
            self.frame += 1
            self.t += self.step
        self.events.append(Event(time=self.t, frame=self.frame, direction=direction, kind=kind,
                                 text=text, tls=self.tls, first_frame=first_frame,
                                 fields=dict(fields)))
        return self

    @property
    def last(self) -> Event:
        return self.events[-1]

    # -- TCP -----------------------------------------------------------------------------
    def syn(self, repeat: bool = False) -> SessionBuilder:
        self.syn_seen = True
        if repeat:
            self.stats.C.syn_retries += 1
        return self.add("C", "tcp-syn", "SYN", repeat=repeat, offset=0)

    def syn_ack(self) -> SessionBuilder:
        return self.add("S", "tcp-syn-ack", "SYN-ACK", repeat=False, offset=0)

    def handshake(self) -> SessionBuilder:
        return self.syn().syn_ack()

    def fin(self, direction: str) -> SessionBuilder:
        return self.add(direction, "tcp-fin", "FIN", repeat=False, offset=0)

    def rst(self, direction: str) -> SessionBuilder:
        return self.add(direction, "tcp-rst", "RST", repeat=False, offset=0)

    def gap(self, direction: str, length: int = 100, reason: str = "acked-unseen",
            offset: int = 0) -> SessionBuilder:
        getattr(self.stats, direction).gaps += 1
        getattr(self.stats, direction).gap_bytes += length
        return self.add(direction, "tcp-gap", f"[{length} bytes not captured: {reason}]",
                        offset=offset, length=length, reason=reason)

    def retrans(self, direction: str, offset: int, length: int,
                original_frame: int | None = None) -> SessionBuilder:
        getattr(self.stats, direction).retransmissions += 1
        return self.add(direction, "tcp-retransmission", f"retransmission {length} bytes",
                        offset=offset, length=length, original_frame=original_frame)

    def icmp_too_big(self, to: str, mtu: int = 1280, router: str = "192.0.2.1",
                     offset: int | None = None, ip_version: int = 4) -> SessionBuilder:
        """A router's ICMP too-big addressed to side ``to`` (the sender of the big segment):
        the event's direction points toward it, as the timeline builder makes it."""
        return self.add(other_dir(to), "icmp-too-big",
                        f"ICMP fragmentation needed from {router}: MTU {mtu}",
                        router=router, mtu=mtu, offset=offset, ip_version=ip_version)

    # -- SMTP ----------------------------------------------------------------------------
    def banner(self, code: int = 220, text: str = "mx.example ESMTP") -> SessionBuilder:
        return self.reply(code, text, answers="CONNECT")

    def cmd(self, line: str, segments: list[list[int]] | None = None,
            split: int | None = None) -> SessionBuilder:
        """A client command; ``split=n`` puts its first n bytes in a frame of their own."""
        verb, _, arg = line.partition(" ")
        fields: dict[str, Any] = {"verb": verb.upper(), "argument": arg,
                                  "known": verb.upper() in KNOWN, "bare_lf": False,
                                  "eight_bit": False, "truncated": 0}
        first = None
        if split is not None:
            self.frame += 1
            self.t += self.step
            first = self.frame
            fields["segments"] = [[first, 0, split], [first + 1, split, len(line) + 2 - split]]
        elif segments is not None:
            fields["segments"] = segments
            first = segments[0][0]
        self.pending.append(verb.upper())
        return self.add("C", "smtp-command", line, first_frame=first, **fields)

    def reply(self, code: int | None, text: str = "", answers: str | None = None,
              caps: list[str] | None = None, lines: list[str] | None = None,
              same_frame: bool = False) -> SessionBuilder:
        if answers is None:
            answers = self.pending.pop(0) if self.pending else None
        elif answers in self.pending:
            self.pending.remove(answers)
        lines = lines or ([text] + list(caps or []))
        enhanced = text.split()[0] if text and text[0] in "245" and text[1:2] == "." else None
        shown = f"{code} {text}" if code is not None else text
        return self.add("S", "smtp-reply", shown, same_frame=same_frame, code=code,
                        enhanced=enhanced, lines=lines, answers=answers,
                        capabilities=[c.upper() for c in caps or []], malformed=code is None)

    def ehlo(self, name: str = "client.example",
             caps: tuple[str, ...] = ("PIPELINING", "SIZE 10240000", "STARTTLS", "8BITMIME"),
             ) -> SessionBuilder:
        return self.cmd(f"EHLO {name}").reply(250, "mx.example", caps=list(caps))

    def body(self, size: int = 1200, complete: bool = True, chunk: bool = False,
             last: bool = False, same_frame: bool = False, first_frame: int | None = None,
             **fields: Any) -> SessionBuilder:
        """``fields`` may add ``start``/``end`` (stream offsets), as the timeline has them."""
        if complete and not chunk:
            self.pending.append("BODY")  # as dissectors/smtp.py pairs the final reply
        return self.add("C", "smtp-body", f"[message body {size} bytes]", same_frame=same_frame,
                        first_frame=first_frame, size=size, complete=complete, chunk=chunk,
                        last=last, **fields)

    def message(self, sender: str = "a@example.org", rcpt: str = "b@example.net",
                final: tuple[int, str] = (250, "2.0.0 Ok: queued as 4XyZ")) -> SessionBuilder:
        return (self.cmd(f"MAIL FROM:<{sender}>").reply(250, "2.1.0 Ok")
                .cmd(f"RCPT TO:<{rcpt}>").reply(250, "2.1.5 Ok")
                .cmd("DATA").reply(354, "End data with <CR><LF>.<CR><LF>")
                .body().reply(*final))

    def quit(self, answer: bool = True) -> SessionBuilder:
        self.cmd("QUIT")
        return self.reply(221, "2.0.0 Bye") if answer else self

    def starttls(self, code: int = 220, text: str = "2.0.0 Ready to start TLS") -> SessionBuilder:
        self.cmd("STARTTLS").reply(code, text)
        if code == 220:
            self.add("C", "smtp-tls-start", "TLS starts", same_frame=True)
            self.tls = True
        return self

    # -- TLS (fields as dissectors/tls.py names them; progress kept like its Progress) -----
    def client_hello(self, versions: tuple[int, ...] = (0x0304, 0x0303),
                     suites: tuple[int, ...] = (0x1301, 0x1302, 0xC02F, 0xC030),
                     sni: str | None = "mx.example", legacy_version: int = 0x0303,
                     same_frame: bool = False) -> SessionBuilder:
        self.tls = True
        self.progress.client.stage = "client-hello"
        return self.add("C", "tls-client-hello", "TLS ClientHello", same_frame=same_frame,
                        legacy_version=legacy_version, versions=list(versions),
                        cipher_suites=list(suites), compression=[0], extensions=[], sni=sni,
                        record_version=0x0301)

    def server_hello(self, version: int = 0x0303, suite: int = 0xC02F) -> SessionBuilder:
        self.progress.version = version
        self.progress.cipher_suite = suite
        self.progress.server.stage = "server-hello"
        return self.add("S", "tls-server-hello", "TLS ServerHello", legacy_version=0x0303,
                        version=version, cipher_suite=suite, compression=0, extensions=[])

    def certificate(self, subject: str = "CN=mx.example", issuer: str = "CN=Example CA",
                    not_before: float | None = None, not_after: float | None = None,
                    self_signed: bool = False, same_frame: bool = True) -> SessionBuilder:
        nb = self.start - 86400 * 30 if not_before is None else not_before
        na = self.start + 86400 * 60 if not_after is None else not_after
        cert = CertInfo(subject=subject, issuer=issuer,
                        common_name=subject.removeprefix("CN="),
                        not_before=datetime.fromtimestamp(nb, timezone.utc),
                        not_after=datetime.fromtimestamp(na, timezone.utc),
                        self_signed=self_signed)
        self.progress.server.stage = "certificate"
        return self.add("S", "tls-certificate", f"TLS Certificate {subject}",
                        same_frame=same_frame, certificates=[plain(cert)], count=1)

    def hs(self, direction: str, name: str, same_frame: bool = True) -> SessionBuilder:
        types = {"ServerHelloDone": 14, "ClientKeyExchange": 16, "ServerKeyExchange": 12,
                 "CertificateRequest": 13, "NewSessionTicket": 4}
        stage = {"ServerHelloDone": "server-hello-done",
                 "ClientKeyExchange": "client-key-exchange"}.get(name, name.lower())
        self.progress[direction].stage = stage
        return self.add(direction, "tls-handshake", f"TLS {name}", same_frame=same_frame,
                        msg_type=types.get(name, 0), name=name, length=40)

    def ccs(self, direction: str, same_frame: bool = True) -> SessionBuilder:
        compat = self.progress.version == 0x0304
        self.progress[direction].ccs = True
        return self.add(direction, "tls-ccs", "TLS ChangeCipherSpec", same_frame=same_frame,
                        middlebox_compat=compat)

    def finished(self, direction: str, same_frame: bool = True,
                 inferred: bool = False) -> SessionBuilder:
        p = self.progress
        what = "Finished"
        if inferred and direction == "S":
            what = "EncryptedExtensions..Finished"
            p.server.stage = "encrypted-handshake"
        else:
            p[direction].finished = True
            p[direction].stage = "finished"
            if inferred:
                p.server.finished = True
                p.handshake_inferred = True
        if p.client.finished and p.server.finished:
            p.handshake_complete = True
        return self.add(direction, "tls-encrypted-handshake", f"TLS encrypted handshake {what}",
                        same_frame=same_frame, length=40, what=what, inferred=inferred)

    def app_data(self, direction: str, records: int = 1, length: int = 64) -> SessionBuilder:
        for _ in range(records):
            peer = self.progress[other_dir(direction)].app_records
            self.progress[direction].app_records += 1
            self.progress[direction].app_bytes += length
            self.progress[direction].stage = "app-data"
            self.add(direction, "tls-app-data", f"TLS application data {length} bytes",
                     length=length, inferred=self.progress.version == 0x0304,
                     peer_app_records=peer)
        return self

    def alert(self, direction: str, description: int | None = 40, level: int | None = 2,
              encrypted: bool = False, same_frame: bool = False) -> SessionBuilder:
        self.progress[direction].alert = "encrypted" if encrypted else str(description)
        return self.add(direction, "tls-alert", f"TLS Alert {level} {description}",
                        same_frame=same_frame, level=level, description=description,
                        encrypted=encrypted, inferred=False, length=2)

    def not_tls(self, direction: str, preview: str = "EHLO client.example\\r\\n") -> SessionBuilder:
        self.progress[direction].stopped = "not-tls"
        return self.add(direction, "tls-not-tls", f"not TLS: {preview}", preview=preview)

    def tls12_handshake(self) -> SessionBuilder:
        """ClientHello .. both Finished, TLS 1.2 (each flight one frame)."""
        return (self.client_hello(versions=()).server_hello(0x0303)
                .certificate().hs("S", "ServerHelloDone")
                .hs("C", "ClientKeyExchange", same_frame=False).ccs("C").finished("C")
                .ccs("S", same_frame=False).finished("S"))

    def tls13_handshake(self) -> SessionBuilder:
        """ClientHello, ServerHello + encrypted flight, client CCS + Finished (inferred)."""
        return (self.client_hello().server_hello(0x0304, 0x1301)
                .ccs("S", same_frame=True).finished("S", inferred=True)
                .ccs("C", same_frame=False).finished("C", inferred=True))

    # -- result --------------------------------------------------------------------------
    def build(self, open_at_end: bool | None = None) -> Session:
        if open_at_end is None:
            open_at_end = not any(e.kind in ("tcp-fin", "tcp-rst") for e in self.events)
        for e in self.events:
            if e.direction in ("C", "S"):
                getattr(self.stats, e.direction).segments += 1
        first = self.events[0] if self.events else None
        return Session(
            id=self.id, client=self.client, server=self.server,
            ip_version=6 if ":" in self.client[0] else 4,
            first_time=first.time if first else self.start,
            last_time=self.events[-1].time if self.events else self.start,
            first_frame=first.frame if first else 1,
            last_frame=self.events[-1].frame if self.events else 1,
            packets=self.frame, syn_seen=self.syn_seen, implicit_tls=self.implicit_tls,
            events=list(self.events), stats=self.stats, open_at_end=open_at_end,
            tls=self.progress if any(e.kind.startswith("tls-") for e in self.events) else None,
        )


def other_dir(direction: str) -> str:
    return "S" if direction == "C" else "C"


KNOWN = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP",
         "NOOP", "QUIT", "STARTTLS", "AUTH", "TURN", "ETRN"}


def healthy() -> SessionBuilder:
    """A plain delivery up to QUIT/221 (add the close yourself)."""
    return SessionBuilder().handshake().banner().ehlo().message().quit()
