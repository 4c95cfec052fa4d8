"""A Cisco PIX "fixup smtp" / ASA "inspect esmtp" look-alike, for the lab.

The real middlebox inspects SMTP one TCP segment at a time and never
reassembles lines across segments. That is what makes it interesting for
pcapsmtp: a pipelined command split across two segments is judged as two
unrelated fragments, and both get rewritten to ``X``::

    client sends   "MAIL FROM:<a@x>\\r\\nRCPT TO:<b@y>\\r\\nRC" + "PT TO:<c@y>\\r\\n"
    server gets    "MAIL FROM:<a@x>\\r\\nRCPT TO:<b@y>\\r\\nXX" + "XX TO:<c@y>\\r\\n"

The proxy reproduces the three signatures operators report, always in place
(never adding or removing a byte, never merging or splitting a chunk):

* the 220 banner text becomes asterisks except ``0`` and ``2``
  (``220 *****0****2*****``);
* disallowed EHLO keywords are masked, STARTTLS becoming ``XXXXXXXA``;
* in each client segment, every line start (segment start or after LF) whose
  verb is not a complete recognised command has that verb turned into ``X``.
  The DATA body (after a 354 and up to the ``.`` line) passes untouched.

Run: ``python3 -m tests.lab.pixproxy --listen 0.0.0.0:25 --connect 198.51.100.25:25``
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: RFC 821's command set plus EHLO: what "fixup smtp" lets through in strict mode.
MINIMAL_VERBS: frozenset[bytes] = frozenset(
    {
        b"HELO", b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT",
        b"VRFY", b"EXPN", b"HELP", b"SEND", b"SOML", b"SAML", b"TURN",
    }
)
#: Commands introduced by ESMTP extensions, allowed unless strict.
EXTENSION_VERBS: frozenset[bytes] = frozenset({b"AUTH", b"STARTTLS", b"ETRN", b"BDAT"})
#: EHLO keywords hidden from the client (so it never tries STARTTLS).
MASKED_EHLO_KEYWORDS: frozenset[bytes] = frozenset({b"STARTTLS"})

#: Banner characters that survive masking; real PIX banners keep some digits.
_BANNER_KEEP = frozenset(b"02\r\n")
#: Bytes that end a command verb.
_VERB_END = frozenset(b" :\r\n")
_END_OF_DATA = b"\r\n.\r\n"


def allowed_verbs(strict: bool = False) -> frozenset[bytes]:
    """Return the recognised client verbs; strict mode drops ESMTP extension commands."""
    return MINIMAL_VERBS if strict else MINIMAL_VERBS | EXTENSION_VERBS


def _line_starts(data: bytes) -> list[int]:
    """Offsets where a line starts *as the PIX sees it*: segment start and after each LF.

    Treating the segment start as a line start, whatever came before, is the
    whole point: the middlebox keeps no line state across segments.
    """
    starts = [0]
    pos = data.find(b"\n")
    while pos != -1 and pos + 1 < len(data):
        starts.append(pos + 1)
        pos = data.find(b"\n", pos + 1)
    return starts


def _line_end(data: bytes, start: int) -> int:
    """Offset just past the LF ending the line at ``start`` (or the segment end)."""
    pos = data.find(b"\n", start)
    return len(data) if pos == -1 else pos + 1


def _reply_code(line: bytes) -> tuple[bytes, bytes] | None:
    """Split ``b"250-"``-style prefixes into (code, separator), or None if not a reply line."""
    if len(line) >= 4 and line[:3].isdigit() and line[3:4] in (b" ", b"-"):
        return line[:3], line[3:4]
    return None


def mask_banner(data: bytes) -> bytes:
    """Mask the text of every ``220`` line in a server chunk, keeping length and code.

    After ``220 `` / ``220-`` each byte becomes ``*`` unless it is ``0``, ``2``,
    CR or LF. Spaces are masked too: real rewritten banners show no spaces
    (``220 *****0****2*****``). Non-220 lines (e.g. a 554 refusal) pass.
    """
    out = bytearray(data)
    for start in _line_starts(data):
        line = data[start:_line_end(data, start)]
        code = _reply_code(line)
        if code is None or code[0] != b"220":
            continue
        for i in range(start + 4, start + len(line)):
            if out[i] not in _BANNER_KEEP:
                out[i] = ord("*")
    return bytes(out)


def _masked_keyword(keyword: bytes) -> bytes:
    """Same-length replacement for a hidden EHLO keyword: STARTTLS -> XXXXXXXA."""
    return b"X" * (len(keyword) - 1) + b"A"


def mask_ehlo_reply(data: bytes, masked: frozenset[bytes] = MASKED_EHLO_KEYWORDS) -> bytes:
    """Hide disallowed keywords in the 250 lines of an EHLO reply chunk, in place.

    Only a whole keyword right after ``250-``/``250 `` is masked (it ends at a
    space, CR, LF or the segment end); a keyword cut in two by a segment
    boundary is not recognised, like on the real box.
    """
    out = bytearray(data)
    for start in _line_starts(data):
        line = data[start:_line_end(data, start)]
        code = _reply_code(line)
        if code is None or code[0] != b"250":
            continue
        word = _verb_at(data, start + 4)
        if word.upper() in masked:
            out[start + 4:start + 4 + len(word)] = _masked_keyword(word)
    return bytes(out)


def _verb_at(data: bytes, start: int) -> bytes:
    """Bytes from ``start`` up to the first space, colon, CR, LF or segment end."""
    end = start
    while end < len(data) and data[end] not in _VERB_END:
        end += 1
    return data[start:end]


def mask_commands(data: bytes, verbs: frozenset[bytes] | None = None) -> bytes:
    """Turn every unrecognised verb at a line start of this segment into X's.

    A fragment such as a tail ``RC`` or a head ``PT`` is not a complete verb,
    so it is masked: that is exactly the ``\\r\\nXX`` + ``XX TO:`` signature.
    """
    verbs = allowed_verbs() if verbs is None else verbs
    out = bytearray(data)
    for start in _line_starts(data):
        verb = _verb_at(data, start)
        if verb and verb.upper() not in verbs:
            out[start:start + len(verb)] = b"X" * len(verb)
    return bytes(out)


def find_body_end(data: bytes, tail: bytes = b"\r\n") -> int | None:
    """Offset in ``data`` just past the end-of-data line, or None if the body goes on.

    ``tail`` is the last bytes of body already forwarded (initially the CRLF
    that ended the DATA command), so a ``\\r\\n.\\r\\n`` split across segments
    is still found: losing DATA state would mask the whole rest of the session.
    """
    joined = tail[-4:] + data
    pos = joined.find(_END_OF_DATA)
    if pos == -1:
        return None
    return pos + len(_END_OF_DATA) - len(tail[-4:])


def mask_client_segment(
    data: bytes, in_data: bool, tail: bytes = b"\r\n", strict: bool = False
) -> bytes:
    """Rewrite one client segment as the PIX would, preserving its length.

    In DATA mode the body passes untouched; commands after the end-of-data
    line in the same segment (say a pipelined QUIT) are judged again.
    """
    verbs = allowed_verbs(strict)
    if not in_data:
        return mask_commands(data, verbs)
    end = find_body_end(data, tail)
    if end is None:
        return data
    return data[:end] + mask_commands(data[end:], verbs)


@dataclass
class PixSession:
    """Per-connection inspection state: banner seen, EHLO pending, DATA body mode.

    Each ``from_*`` call handles one received chunk and returns what to
    forward. Server chunks must be processed before they are forwarded, so the
    354 switches to body mode before the client can react to it.
    """

    strict: bool = False
    banner_done: bool = False
    ehlo_pending: bool = False
    in_data: bool = False
    body_tail: bytes = b"\r\n"
    rewrites: int = field(default=0)

    def from_client(self, data: bytes) -> bytes:
        """Mask one client segment and update DATA/EHLO state from it."""
        out = mask_client_segment(data, self.in_data, self.body_tail, self.strict)
        commands = out
        if self.in_data:
            end = find_body_end(data, self.body_tail)
            if end is None:
                self.body_tail = (self.body_tail + data)[-4:]
                commands = b""
            else:
                self.in_data = False
                commands = out[end:]
        if _sends_ehlo(commands):
            self.ehlo_pending = True
        self.rewrites += out != data
        return out

    def from_server(self, data: bytes) -> bytes:
        """Mask banner/EHLO reply in one server chunk; a 354 line enters body mode."""
        out = data
        if not self.banner_done:
            out = mask_banner(out)
            self.banner_done = _has_final_line(data)
        elif self.ehlo_pending:
            out = mask_ehlo_reply(out)
            self.ehlo_pending = not _has_final_line(data)
        for start in _line_starts(data):
            if data.startswith(b"354", start):
                self.in_data = True
                self.body_tail = b"\r\n"
        self.rewrites += out != data
        return out


def _has_final_line(data: bytes) -> bool:
    """True if the chunk holds a complete last reply line (``ddd `` ... LF)."""
    for start in _line_starts(data):
        line = data[start:_line_end(data, start)]
        code = _reply_code(line)
        if code and code[1] == b" " and line.endswith(b"\n"):
            return True
    return False


def _sends_ehlo(commands: bytes) -> bool:
    """True if an (already masked) client segment carries an EHLO line.

    A masked EHLO (``XXXX``) does not count: the server will not answer it
    with a keyword list.
    """
    return bool(commands) and any(
        _verb_at(commands, start).upper() == b"EHLO" for start in _line_starts(commands)
    )


def send_split(sock: socket.socket, parts: list[bytes], gap: float = 0.2) -> None:
    """Send each part as its own TCP segment: TCP_NODELAY, then a pause between parts.

    The pause lets the kernel put each part on the wire before the next one is
    queued, so the proxy's ``recv()`` sees them apart. Example, the pipelined
    RCPT split that a PIX turns into ``XX`` + ``XX TO:``::

        send_split(sock, [b"MAIL FROM:<s@x>\\r\\nRCPT TO:<a@y>\\r\\nRC",
                          b"PT TO:<b@y>\\r\\nDATA\\r\\n"], gap=0.2)
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, part in enumerate(parts):
        if i:
            time.sleep(gap)
        sock.sendall(part)


def parse_hostport(text: str) -> tuple[str, int]:
    """``"198.51.100.25:25"`` -> ("198.51.100.25", 25); ``[v6]:port`` also accepted."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0 so the peer gets a RST, mirroring a reset we received."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Relay:
    """One client connection and its upstream, pumped by a single selector thread.

    A single thread per pair (rather than one per direction) means closing or
    resetting a socket never races a ``recv()`` blocked in another thread.
    """

    def __init__(self, client: socket.socket, upstream: socket.socket, strict: bool,
                 stop: threading.Event, log: Callable[[str], None] | None) -> None:
        self.client, self.upstream, self.stop, self.log = client, upstream, stop, log
        self.session = PixSession(strict=strict)
        self.open_reads = {client, upstream}

    def _peer(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def _rewrite(self, sock: socket.socket, data: bytes) -> bytes:
        """Judge one chunk on its own, as the PIX does."""
        if sock is self.client:
            out = self.session.from_client(data)
        else:
            out = self.session.from_server(data)
        if self.log and out != data:
            side = "client" if sock is self.client else "server"
            self.log(f"rewrote {side} chunk {data!r} -> {out!r}")
        return out

    def _pump_once(self, sock: socket.socket, sel: selectors.BaseSelector) -> bool:
        """Forward one chunk; return False when the relay must end (reset)."""
        peer = self._peer(sock)
        try:
            data = sock.recv(65536)
        except OSError:  # a reset, mostly: pass it on as a reset
            _reset(peer)
            return False
        if not data:
            sel.unregister(sock)
            self.open_reads.discard(sock)
            try:
                peer.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return bool(self.open_reads)
        try:
            peer.sendall(self._rewrite(sock, data))
        except OSError:
            _reset(sock)
            return False
        return True

    def run(self) -> None:
        """Relay until both sides have closed, one resets, or the proxy stops."""
        with selectors.DefaultSelector() as sel:
            for sock in self.open_reads:
                sel.register(sock, selectors.EVENT_READ)
            alive = True
            while alive and not self.stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    alive = alive and self._pump_once(key.fileobj, sel)  # type: ignore[arg-type]
        self.client.close()
        self.upstream.close()


def _handle(client: socket.socket, connect: tuple[str, int], strict: bool,
            stop: threading.Event, log: Callable[[str], None] | None) -> None:
    """Open the upstream connection for one client, then relay; refuse with RST on failure."""
    try:
        upstream = socket.create_connection(connect, timeout=10)
    except OSError as exc:
        if log:
            log(f"upstream {connect} failed: {exc}")
        _reset(client)
        return
    for sock in (client, upstream):
        sock.settimeout(30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _Relay(client, upstream, strict, stop, log).run()


def serve(listen: tuple[str, int], connect: tuple[str, int], stop: threading.Event,
          strict: bool = False, log: Callable[[str], None] | None = None) -> None:
    """Accept clients on ``listen`` and relay each to ``connect`` until ``stop`` is set."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(listen)
        lsock.listen(16)
        lsock.settimeout(0.2)
        host, port = lsock.getsockname()[:2]
        print(f"pixproxy listening on {host}:{port} -> {connect[0]}:{connect[1]}",
              file=sys.stderr, flush=True)
        threads: list[threading.Thread] = []
        while not stop.is_set():
            try:
                client, _ = lsock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=_handle, args=(client, connect, strict, stop, log),
                                      daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    for thread in threads:
        thread.join(timeout=2)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; SIGTERM/SIGINT stop the proxy and it exits 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=parse_hostport, required=True, help="HOST:PORT")
    parser.add_argument("--connect", type=parse_hostport, required=True, help="HOST:PORT")
    parser.add_argument("--strict", action="store_true",
                        help="recognise only the minimal SMTP verbs (no AUTH/STARTTLS/...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log rewrites to stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log = (lambda msg: print(f"pixproxy: {msg}", file=sys.stderr, flush=True)) \
        if args.verbose else None
    serve(args.listen, args.connect, stop, strict=args.strict, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
