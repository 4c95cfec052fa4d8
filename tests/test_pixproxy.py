"""Tests for the lab's PIX "fixup smtp" look-alike (tests/lab/pixproxy.py).

The pure masking functions are checked against the signatures operators
report; one loopback test runs the real CLI between a client and a fake SMTP
server to prove segment-by-segment judging survives real sockets.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.lab.pixproxy import (
    PixSession,
    find_body_end,
    mask_banner,
    mask_client_segment,
    mask_ehlo_reply,
    send_split,
)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0

# --- banner ---------------------------------------------------------------


def test_banner_masked_keeps_code_length_and_some_digits() -> None:
    banner = b"220 mx02.example.com ESMTP 2024\r\n"
    out = mask_banner(banner)
    assert out == b"220 **02*******************202*\r\n"
    assert len(out) == len(banner)


def test_multiline_banner_masks_every_220_line() -> None:
    out = mask_banner(b"220-mx.example\r\n220 ready\r\n")
    assert out == b"220-**********\r\n220 *****\r\n"


def test_non_220_banner_passes() -> None:
    refusal = b"554 5.7.1 go away\r\n"
    assert mask_banner(refusal) == refusal


# --- EHLO reply -----------------------------------------------------------


def test_ehlo_reply_hides_starttls_keeps_the_rest() -> None:
    reply = b"250-mx\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    out = mask_ehlo_reply(reply)
    assert out == b"250-mx\r\n250-PIPELINING\r\n250-XXXXXXXA\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"


def test_ehlo_reply_starttls_as_last_line_and_lower_case() -> None:
    assert mask_ehlo_reply(b"250-mx\r\n250 starttls\r\n") == b"250-mx\r\n250 XXXXXXXA\r\n"


def test_ehlo_reply_keyword_cut_by_segment_is_not_recognised() -> None:
    first = b"250-mx\r\n250-START"
    assert mask_ehlo_reply(first) == first


# --- client segments ------------------------------------------------------


def test_split_pipelined_rcpt_becomes_xx_tail_and_xx_head() -> None:
    first = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRC"
    second = b"PT TO:<c@y>\r\n"
    assert mask_client_segment(first, in_data=False) == b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nXX"
    assert mask_client_segment(second, in_data=False) == b"XX TO:<c@y>\r\n"


@pytest.mark.parametrize(
    "line",
    [b"RCPT TO:<b@y>\r\n", b"mail from:<a@x>\r\n", b"DATA\r\n", b"QUIT", b"AUTH PLAIN AG==\r\n"],
)
def test_recognised_line_passes_untouched(line: bytes) -> None:
    assert mask_client_segment(line, in_data=False) == line


def test_unknown_verb_is_masked_in_place() -> None:
    assert mask_client_segment(b"FOOB bar\r\nNOOP\r\n", False) == b"XXXX bar\r\nNOOP\r\n"


def test_strict_mode_masks_extension_commands() -> None:
    assert mask_client_segment(b"AUTH PLAIN x\r\n", False, strict=True) == b"XXXX PLAIN x\r\n"
    assert mask_client_segment(b"STARTTLS\r\n", False, strict=True) == b"XXXXXXXX\r\n"


def test_body_bytes_untouched() -> None:
    body = b"Subject: hi\r\n\r\nRC not a command\r\nSTARTTLS\r\n"
    assert mask_client_segment(body, in_data=True) == body


def test_commands_after_end_of_data_are_judged_again() -> None:
    seg = b"last line\r\n.\r\nQUIT\r\nFOO\r\n"
    assert mask_client_segment(seg, in_data=True) == b"last line\r\n.\r\nQUIT\r\nXXX\r\n"


def test_end_of_data_found_across_segments() -> None:
    assert find_body_end(b"\n.\r\nQUIT\r\n", tail=b"text\r") == 4
    assert find_body_end(b".\r\n", tail=b"\r\n") == 3
    assert find_body_end(b"more body\r\n", tail=b"\r\n") is None


@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_length_preserved_and_only_x_written(data: bytes, in_data: bool, strict: bool) -> None:
    out = mask_client_segment(data, in_data, strict=strict)
    assert len(out) == len(data)
    assert all(o == i or o == ord("X") for o, i in zip(out, data, strict=True))


# --- per-connection state -------------------------------------------------


def test_session_tracks_banner_ehlo_and_data() -> None:
    s = PixSession()
    assert s.from_server(b"220 mx\r\n") == b"220 **\r\n"
    assert s.from_server(b"220 not a banner any more\r\n") == b"220 not a banner any more\r\n"
    assert s.from_client(b"EHLO me\r\n") == b"EHLO me\r\n"
    assert s.from_server(b"250-mx\r\n250 STARTTLS\r\n") == b"250-mx\r\n250 XXXXXXXA\r\n"
    assert s.from_server(b"250 STARTTLS\r\n") == b"250 STARTTLS\r\n"  # no EHLO pending
    s.from_client(b"DATA\r\n")
    s.from_server(b"354 go ahead\r\n")
    assert s.in_data
    assert s.from_client(b"RC body\r\n\r") == b"RC body\r\n\r"
    assert s.from_client(b"\n.\r\nQUIT\r\n") == b"\n.\r\nQUIT\r\n"
    assert not s.in_data
    assert s.from_client(b"RC") == b"XX"


# --- loopback end to end --------------------------------------------------


class FakeSmtpServer:
    """Minimal line-based SMTP server on 127.0.0.1 that records every chunk it receives."""

    BANNER = b"220 mx02.example.com ESMTP 2024\r\n"
    EHLO = b"250-mx02.example.com\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
    VERBS = (b"MAIL", b"RCPT", b"RSET", b"NOOP")

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _answer(self, line: bytes, in_data: bool) -> tuple[bytes, bool]:
        """Reply for one complete line and the new DATA state."""
        if in_data:
            return (b"250 2.0.0 queued\r\n", False) if line == b".\r\n" else (b"", True)
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"EHLO":
            return self.EHLO, False
        if verb == b"DATA":
            return b"354 End data with <CR><LF>.<CR><LF>\r\n", True
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", False
        if verb in self.VERBS:
            return b"250 2.1.0 Ok\r\n", False
        return b"502 5.5.2 Error: command not recognized\r\n", False

    def _serve(self, conn: socket.socket) -> None:
        conn.sendall(self.BANNER)
        buf, in_data = b"", False
        while chunk := conn.recv(4096):
            self.chunks.append(chunk)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply, in_data = self._answer(line + b"\n", in_data)
                conn.sendall(reply)
                if reply.startswith(b"221"):
                    return

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self._serve(conn)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.listener.close()


def _wait_listening(proc: subprocess.Popen[bytes]) -> int:
    """Read the proxy's stderr until its "listening" line; return the bound port."""
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stderr.readline().decode()
                match = re.search(r"listening on \S+:(\d+)", line)
                if match:
                    return int(match.group(1))
                if not line:
                    break
    raise AssertionError(f"proxy never said 'listening' (exit {proc.poll()})")


@contextlib.contextmanager
def running_proxy(upstream_port: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The proxy CLI on an ephemeral port in front of ``upstream_port``; killed if still up."""
    cmd = [sys.executable, "-m", "tests.lab.pixproxy", "--listen", "127.0.0.1:0",
           "--connect", f"127.0.0.1:{upstream_port}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        yield _wait_listening(proc), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


@pytest.fixture
def proxy_to_fake() -> Iterator[tuple[FakeSmtpServer, int, subprocess.Popen[bytes]]]:
    """A fake server plus the proxy CLI in front of it, both torn down afterwards."""
    server = FakeSmtpServer()
    server.thread.start()
    try:
        with running_proxy(server.port) as (port, proc):
            yield server, port, proc
    finally:
        server.listener.close()
        server.thread.join(timeout=TIMEOUT)


def _read_reply(sock: socket.socket, code: bytes) -> bytes:
    """Read until a final reply line with ``code`` (``"354 "``...) has fully arrived."""
    buf = b""
    deadline = time.monotonic() + TIMEOUT
    while not re.search(rb"(^|\n)" + code + rb" [^\n]*\n", buf):
        assert time.monotonic() < deadline, f"no {code!r} reply in {buf!r}"
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before {code!r}; got {buf!r}"
        buf += chunk
    return buf


def test_end_to_end_split_rcpt_through_proxy(proxy_to_fake) -> None:
    server, port, proc = proxy_to_fake
    body = b"Subject: t\r\n\r\nRC not a command\r\nSTARTTLS\r\n.\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        banner = _read_reply(client, b"220")
        client.sendall(b"EHLO client.test\r\n")
        ehlo = _read_reply(client, b"250")
        send_split(client, [b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRC",
                            b"PT TO:<c@y>\r\nDATA\r\n"], gap=0.3)
        pipelined = _read_reply(client, b"354")
        client.sendall(body + b"QUIT\r\n")
        _read_reply(client, b"221")
        assert client.recv(4096) == b""  # server's FIN came through the proxy

    server.thread.join(timeout=TIMEOUT)
    assert server.error is None
    assert banner == b"220 **02*******************202*\r\n"
    assert b"250-XXXXXXXA\r\n" in ehlo and b"STARTTLS" not in ehlo
    assert b"250-PIPELINING\r\n" in ehlo
    assert b"502" in pipelined  # the server rejected the X-rewritten RCPT
    received = b"".join(server.chunks)
    assert received == (b"EHLO client.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
                        b"XXXX TO:<c@y>\r\nDATA\r\n" + body + b"QUIT\r\n")
    tails = [i for i, c in enumerate(server.chunks) if c.endswith(b"RCPT TO:<b@y>\r\nXX")]
    assert tails and server.chunks[tails[0] + 1].startswith(b"XX TO:<c@y>\r\n")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0


def test_upstream_reset_is_passed_on_as_reset() -> None:
    """A server that aborts (RST) mid-session must look the same to the client."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        with running_proxy(listener.getsockname()[1]) as (port, _proc):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
                conn, _ = listener.accept()
                conn.sendall(b"220 bye\r\n")
                assert _read_reply(client, b"220") == b"220 ***\r\n"
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                with pytest.raises(ConnectionResetError):
                    client.recv(4096)
