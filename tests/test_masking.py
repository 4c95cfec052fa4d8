"""Credentials never leave through the events that quote raw client bytes (masking.py).

Each capture below puts a base64 secret where only the reassembly or the TLS parser
quotes it; every output format is searched for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pcapsmtp.cli import main
from pcapsmtp.masking import mask_auth_text
from tests.craft_session import Conversation, up_to_354

SECRET = "dGVzdAB0ZXN0AHNlY3JldA=="  # base64 of "test\0test\0secret"
OTHER = "dGVzdAB0ZXN0AHBhc3N3b3Jk"  # the same user, another password
FORMATS = ("text", "json", "markdown", "html")


def outputs(path: Path) -> dict[str, str]:
    out = {}
    for fmt in FORMATS:
        result = CliRunner().invoke(main, ["analyze", "-f", fmt, str(path)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out[fmt] = result.output
    return out


def assert_no_secret(path: Path) -> dict[str, str]:
    out = outputs(path)
    for fmt, text in out.items():
        for secret in (SECRET, OTHER, SECRET[:12], OTHER[-12:]):
            assert secret not in text, (fmt, secret)
    return out


def _ehlo(conv: Conversation, caps: bytes) -> None:
    conv.handshake()
    conv.server_sends(b"220 mx ESMTP\r\n")
    conv.client_sends(b"EHLO a\r\n")
    conv.server_sends(b"250-mx\r\n" + caps)


def test_a_resent_auth_line_with_other_bytes_is_not_quoted(tmp_path: Path) -> None:
    """The retransmission carries another password: the overlap is reported (it is
    evidence), its bytes are not."""
    conv = Conversation()
    _ehlo(conv, b"250 AUTH PLAIN\r\n")
    seq = conv.cseq
    conv.client_sends(f"AUTH PLAIN {SECRET}\r\n".encode())
    conv._pkt(True, "PA", f"AUTH PLAIN {OTHER}\r\n".encode(), seq=seq)
    conv.server_sends(b"235 2.7.0 ok\r\n")
    conv.client_sends(b"QUIT\r\n")
    conv.server_sends(b"221 bye\r\n")
    conv.close()
    out = assert_no_secret(conv.write(tmp_path / "x.pcap"))
    assert "bytes differ from the first copy (AUTH data, not shown)" in out["text"]
    assert "overlap-differs" in out["text"]


def test_a_resent_body_with_other_bytes_is_not_quoted(tmp_path: Path) -> None:
    conv = Conversation()
    _ehlo(conv, b"250 PIPELINING\r\n")
    up_to_354(conv)
    seq = conv.cseq
    conv.client_sends(f"Subject: x\r\n\r\n{SECRET}\r\n".encode())
    conv._pkt(True, "PA", f"Subject: x\r\n\r\n{OTHER}\r\n".encode(), seq=seq)
    conv.client_sends(b".\r\n")
    conv.server_sends(b"250 queued\r\n")
    conv.close()
    out = assert_no_secret(conv.write(tmp_path / "x.pcap"))
    assert "(message body, not shown)" in out["text"]


def test_plaintext_auth_where_tls_was_due_is_masked(tmp_path: Path) -> None:
    """A client that ignores the 220 to STARTTLS and goes on in plaintext: its bytes
    are quoted as 'not TLS' and by the starttls-not-followed verdict."""
    conv = Conversation()
    _ehlo(conv, b"250-STARTTLS\r\n250 AUTH PLAIN\r\n")
    conv.client_sends(b"STARTTLS\r\n")
    conv.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    conv.client_sends(f"AUTH PLAIN {SECRET}\r\n".encode())
    conv.close(client_first=False)
    out = assert_no_secret(conv.write(tmp_path / "x.pcap"))
    assert "AUTH PLAIN ****" in out["text"]


def test_auth_pipelined_behind_starttls_is_masked(tmp_path: Path) -> None:
    """The STARTTLS injection shape with credentials behind it: shown as plaintext
    after STARTTLS, masked."""
    conv = Conversation()
    _ehlo(conv, b"250-STARTTLS\r\n250 AUTH PLAIN\r\n")
    conv.client_sends(f"STARTTLS\r\nAUTH PLAIN {SECRET}\r\n".encode())
    conv.server_sends(b"220 2.0.0 Ready to start TLS\r\n")
    conv.close(client_first=False)
    out = assert_no_secret(conv.write(tmp_path / "x.pcap"))
    assert "AUTH PLAIN ****" in out["text"]


@pytest.mark.parametrize(("text", "masked"), [
    (f"AUTH PLAIN {SECRET}", "AUTH PLAIN ****"),
    ("AUTH PLAIN", "AUTH PLAIN"),  # nothing secret after the mechanism
    (f"EHLO a\\r\\nAUTH LOGIN\\r\\n{SECRET}\\r\\n", "EHLO a\\r\\nAUTH LOGIN ****"),
    (f"AUTH {SECRET}", "AUTH ****"),  # a response where the mechanism belongs
    (f"auth plain {SECRET}", "auth ****"),  # lower case: masked more, never less
    ("EHLO auth.example.com", "EHLO auth.example.com"),  # AUTH only at a line start
])
def test_mask_auth_text(text: str, masked: str) -> None:
    assert mask_auth_text(text) == masked


def test_a_text_quoting_a_cut_preview_is_masked_too() -> None:
    """The event text holds the preview cut to the text cap: no exact match to replace."""
    from pcapsmtp.masking import mask_session
    from pcapsmtp.timeline import Event

    preview = f"EHLO a\\r\\nAUTH PLAIN {SECRET}\\r\\n"
    e = Event(1.0, 9, "C", "tls-not-tls", f"not TLS: {preview[:30]}...",
              fields={"preview": preview})
    mask_session([e])
    assert e.fields["preview"] == "EHLO a\\r\\nAUTH PLAIN ****"
    assert SECRET[:8] not in e.text and e.text.startswith("not TLS: EHLO a")
