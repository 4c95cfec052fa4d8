"""A minimal SMTP server that closes the connection when the ClientHello arrives.

Why it exists: real Postfix (OpenSSL) always answers a ClientHello it dislikes with an
alert; some real MTAs instead drop the connection with a bare FIN. Postfix cannot be
made to do that on demand, so this server plays that part on a real TCP stack.
Run inside the server namespace: python3 -m tests.lab.pyserver ADDR PORT.
"""

from __future__ import annotations

import argparse
import socket
import sys

BANNER = b"220 mx.lab.example ESMTP (lab FIN-on-ClientHello server)\r\n"
EHLO_REPLY = b"250-mx.lab.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


def read_line(conn: socket.socket) -> bytes:
    """Read up to a LF (commands are short; b'' on EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            return data
        data += chunk
    return data


def serve_one(conn: socket.socket) -> None:
    """Banner, answer EHLO/HELO, 220 to STARTTLS, read the ClientHello record, close."""
    conn.sendall(BANNER)
    while line := read_line(conn):
        verb = line[:8].upper()
        if verb.startswith((b"EHLO", b"HELO")):
            conn.sendall(EHLO_REPLY)
        elif verb.startswith(b"STARTTLS"):
            conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            conn.recv(16384)  # the ClientHello; close without a word (FIN)
            return
        elif verb.startswith(b"QUIT"):
            conn.sendall(b"221 2.0.0 Bye\r\n")
            return
        else:
            conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")


def main(argv: list[str] | None = None) -> int:
    """Serve connections one at a time until killed."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("addr")
    ap.add_argument("port", type=int)
    args = ap.parse_args(argv)
    family = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.addr, args.port))
        srv.listen(5)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(10)
                try:
                    serve_one(conn)
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
