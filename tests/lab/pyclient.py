"""Small SMTP clients for behaviours swaks and openssl cannot produce on demand.

Each mode is a real client on a real TCP/IP stack (Python's socket and ssl, i.e. OpenSSL);
only its behaviour is scripted: go silent, talk early, reset mid-DATA and so on.
Run inside the client namespace: python3 -m tests.lab.pyclient MODE HOST PORT [options].
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable

EHLO = b"EHLO client.lab.example\r\n"


def log(direction: str, data: bytes) -> None:
    """Transcript on stdout so the lab keeps what the client saw."""
    for line in data.decode(errors="replace").splitlines():
        print(f"{direction} {line}", flush=True)


def connect(host: str, port: int, lport: int, timeout: float,
            user_timeout: float = 0) -> socket.socket:
    """TCP connect from a fixed local port (reproducible captures)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if lport:
        sock.bind(("", lport))
    if user_timeout:
        # Bounded life for unacknowledged data: no orphan keeps retransmitting into
        # the next scenario's capture once the client has exited.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(user_timeout * 1000))
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Read one complete (possibly multi-line) SMTP reply; b'' on EOF."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" " and not lines[-1]:
            break
    log("<-", data)
    return data


def send(sock: socket.socket | ssl.SSLSocket, data: bytes) -> None:
    """Send and log."""
    log("->", data)
    sock.sendall(data)


def drain(sock: socket.socket | ssl.SSLSocket, limit: float) -> None:
    """Read until the peer closes or limit seconds pass (the peer's last words)."""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(4096):
            log("<-", chunk)
    except (TimeoutError, OSError) as exc:
        print(f"!! {type(exc).__name__}: {exc}", flush=True)
    print("== closed by peer or limit", flush=True)


def starttls(sock: socket.socket, keylog: str | None = None,
             command: bytes = b"STARTTLS\r\n", tls13: bool = False) -> ssl.SSLSocket:
    """EHLO, STARTTLS, then a TLS 1.2 handshake (1.2: nothing encrypted flows after it).

    ``keylog``: write the session keys there (SSLKEYLOGFILE format) for decryption;
    ``command``: what is sent for STARTTLS (with a line pipelined behind it, say);
    ``tls13``: allow TLS 1.3."""
    reply(sock)
    send(sock, EHLO)
    reply(sock)
    send(sock, command)
    reply(sock)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if not tls13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if keylog:
        ctx.keylog_filename = keylog
    tls = ctx.wrap_socket(sock, server_hostname="mx.lab.example")
    print(f"== TLS {tls.version()} {tls.cipher()}", flush=True)
    return tls


def mode_starttls_inject(sock: socket.socket, args: argparse.Namespace) -> None:
    """STARTTLS with a plaintext RSET pipelined behind it (the CVE-2011-0411 probe that
    scanners send), then a normal TLS session: EHLO and QUIT inside TLS."""
    tls = starttls(sock, command=b"STARTTLS\r\nRSET\r\n", tls13=True)
    for line in (EHLO, b"QUIT\r\n"):
        send(tls, line)
        log("<~", reply(tls))
    drain(tls, 2)


def mode_tls_silent(sock: socket.socket, args: argparse.Namespace) -> None:
    """Handshake, then say nothing: the server must give up (smtpd_timeout)."""
    tls = starttls(sock)
    drain(tls, args.wait)


def mode_tls_ehlo(sock: socket.socket, args: argparse.Namespace) -> None:
    """Handshake, send EHLO as the first encrypted record, wait for an answer."""
    tls = starttls(sock)
    send(tls, EHLO)
    drain(tls, args.wait)


def mode_tls_keylog(sock: socket.socket, args: argparse.Namespace) -> None:
    """STARTTLS with the keys logged, then EHLO, MAIL, a RCPT the server rejects, QUIT:
    encrypted, it looks fine; decrypted, the 550 shows."""
    tls = starttls(sock, keylog=args.keylog)
    for line in (EHLO, b"MAIL FROM:<sender@example.org>\r\n",
                 b"RCPT TO:<nobody@lab.example>\r\n", b"QUIT\r\n"):
        send(tls, line)
        log("<~", reply(tls))
    drain(tls, 2)


def mode_plain_silent(sock: socket.socket, args: argparse.Namespace) -> None:
    """EHLO, then silence in plaintext: the server times out."""
    reply(sock)
    send(sock, EHLO)
    reply(sock)
    drain(sock, args.wait)


def mode_early_talker(sock: socket.socket, args: argparse.Namespace) -> None:
    """Send EHLO right after connect, before the 220 banner can arrive."""
    send(sock, EHLO)
    drain_until_quit(sock)


def drain_until_quit(sock: socket.socket) -> None:
    """Read whatever replies came within half a second, then QUIT politely."""
    time.sleep(0.5)
    sock.settimeout(2)
    try:
        log("<-", sock.recv(8192))
    except TimeoutError:
        pass
    send(sock, b"QUIT\r\n")
    drain(sock, 3)


def mode_starttls_plain(sock: socket.socket, args: argparse.Namespace) -> None:
    """STARTTLS accepted (220), then plaintext EHLO instead of a ClientHello."""
    reply(sock)
    send(sock, EHLO)
    reply(sock)
    send(sock, b"STARTTLS\r\n")
    reply(sock)
    send(sock, EHLO)
    drain(sock, args.wait)


def open_data(sock: socket.socket, rcpt: str) -> None:
    """Banner, EHLO, MAIL, RCPT, DATA up to the 354."""
    reply(sock)
    for cmd in (EHLO, b"MAIL FROM:<sender@example.org>\r\n", f"RCPT TO:<{rcpt}>\r\n".encode(),
                b"DATA\r\n"):
        send(sock, cmd)
        reply(sock)


def mode_reset_mid_data(sock: socket.socket, args: argparse.Namespace) -> None:
    """Half a message body, then close with SO_LINGER 0: the kernel sends RST."""
    open_data(sock, "user@lab.example")
    send(sock, b"Subject: lab reset\r\n\r\nfirst half of the body\r\n")
    time.sleep(0.3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    print("== close with SO_LINGER 0 (RST)", flush=True)


def mode_bare_lf_end(sock: socket.socket, args: argparse.Namespace) -> None:
    """A message ended by "\\n.\\n" instead of "\\r\\n.\\r\\n" (what SMTP smuggling sends)."""
    open_data(sock, "user@lab.example")
    send(sock, b"Subject: lab bare LF\r\n\r\nthe body\n.\n")
    reply(sock)
    send(sock, b"QUIT\r\n")
    reply(sock)
    drain(sock, 2)


def mode_idle_after_message(sock: socket.socket, args: argparse.Namespace) -> None:
    """One message accepted, then no QUIT: silence until the server's idle timeout."""
    open_data(sock, "user@lab.example")
    send(sock, b"Subject: lab idle after message\r\n\r\nbody\r\n.\r\n")
    reply(sock)
    drain(sock, args.wait)


def mode_big_data(sock: socket.socket, args: argparse.Namespace) -> None:
    """A body larger than the path MTU in one write (the PMTU black-hole trigger)."""
    open_data(sock, "user@lab.example")
    body = b"Subject: lab big\r\n\r\n" + (b"x" * 76 + b"\r\n") * (args.size // 78) + b".\r\n"
    print(f"-> [{len(body)} bytes of body]", flush=True)
    try:
        sock.sendall(body)
        reply(sock)
    except (TimeoutError, OSError) as exc:
        print(f"!! {type(exc).__name__}: {exc}", flush=True)
    drain(sock, args.wait)


def mode_syn(sock: socket.socket, args: argparse.Namespace) -> None:
    """Connected after all: read the banner and QUIT (used by connect-only probes)."""
    reply(sock)
    send(sock, b"QUIT\r\n")
    drain(sock, 3)


def mode_split_rcpt(sock: socket.socket, args: argparse.Namespace) -> None:
    """Pipelined MAIL/RCPT with the second RCPT split across two TCP segments."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reply(sock)
    send(sock, EHLO)
    reply(sock)
    send(sock, b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@lab.example>\r\nRC")
    time.sleep(0.3)  # let the first segment go out alone
    send(sock, b"PT TO:<other@lab.example>\r\n")
    drain_until_quit(sock)


def mode_banner_silent(sock: socket.socket, args: argparse.Namespace) -> None:
    """Read the banner, then send nothing at all: the server's idle timeout ends it."""
    reply(sock)
    drain(sock, args.wait)


def mode_tls_quit_close_notify(sock: socket.socket, args: argparse.Namespace) -> None:
    """STARTTLS (TLS 1.3 unless --tls12), EHLO, QUIT, and at once, without waiting for the
    221, the client's close_notify (a non-blocking unwrap sends it and returns): it sits
    unread in Postfix's socket when Postfix closes, so its kernel answers with RST."""
    tls = starttls(sock, tls13=not args.tls12)
    send(tls, EHLO)
    log("<~", reply(tls))
    send(tls, b"QUIT\r\n")
    tls.setblocking(False)
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    print("== close_notify sent before the 221", flush=True)
    time.sleep(args.wait)


def mode_plain_to_tls(sock: socket.socket, args: argparse.Namespace) -> None:
    """A plaintext EHLO to a port that expects a TLS ClientHello first (465)."""
    send(sock, EHLO)
    drain(sock, args.wait)


MODES: dict[str, Callable[[socket.socket, argparse.Namespace], None]] = {
    "tls-silent": mode_tls_silent,
    "tls-ehlo": mode_tls_ehlo,
    "tls-keylog": mode_tls_keylog,
    "plain-silent": mode_plain_silent,
    "early-talker": mode_early_talker,
    "starttls-plain": mode_starttls_plain,
    "reset-mid-data": mode_reset_mid_data,
    "bare-lf-end": mode_bare_lf_end,
    "starttls-inject": mode_starttls_inject,
    "big-data": mode_big_data,
    "idle-after-message": mode_idle_after_message,
    "connect": mode_syn,
    "split-rcpt": mode_split_rcpt,
    "banner-silent": mode_banner_silent,
    "tls-quit-close-notify": mode_tls_quit_close_notify,
    "plain-to-tls": mode_plain_to_tls,
}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, connect, run the mode; exit 0 even when the peer misbehaves."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--lport", type=int, default=0)
    ap.add_argument("--wait", type=float, default=10.0, help="max seconds to wait at the end")
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--keylog", default=None, help="SSLKEYLOGFILE to write (tls-keylog)")
    ap.add_argument("--user-timeout", type=float, default=0, help="TCP_USER_TIMEOUT seconds")
    ap.add_argument("--tls12", type=int, default=0, help="1: limit TLS to 1.2")
    args = ap.parse_args(argv)
    try:
        sock = connect(args.host, args.port, args.lport, args.connect_timeout,
                       args.user_timeout)
    except (TimeoutError, OSError) as exc:
        print(f"!! connect: {type(exc).__name__}: {exc}", flush=True)
        return 0
    sock.settimeout(args.wait)
    try:
        MODES[args.mode](sock, args)
    except (OSError, ssl.SSLError) as exc:
        print(f"!! {type(exc).__name__}: {exc}", flush=True)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
