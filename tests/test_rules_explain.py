"""`pcapsmtp explain`: every DESIGN verdict explained, with log lines, in 100 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcapsmtp.explain import CODES, EXPLANATIONS, explain
from pcapsmtp.rules import VERDICT_CODES

# ../shared beside the checkout, as CI places it (users do not have it: skipped then).
DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def test_codes_are_the_verdict_codes() -> None:
    assert CODES == list(VERDICT_CODES)
    assert set(EXPLANATIONS) == set(CODES)


@pytest.mark.skipif(not DESIGN.exists(), reason="design notes not present")
def test_every_design_verdict_is_known() -> None:
    table = re.findall(r"^\| `([a-z0-9-]+)` \|", DESIGN.read_text(), re.M)
    assert table and set(table) == set(CODES)


@pytest.mark.parametrize("code", CODES)
def test_explain_has_log_lines_and_fits(code: str) -> None:
    text = explain(code)
    assert text.startswith(code + "\n")
    assert "Typical log lines:" in text
    logs = text.split("Typical log lines:")[1].split("What to do:")[0]
    assert any(line.strip() for line in logs.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 100


def test_named_log_lines_are_present() -> None:
    everything = "".join(explain(c) for c in CODES)
    for line in ("lost connection after STARTTLS", "SSL_accept error from",
                 "improper command pipelining after", "timeout after END-OF-MESSAGE",
                 "SMTP protocol synchronization error", "(SSL_accept)",
                 "did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
                 "403 4.7.0 TLS handshake failed", "STARTTLS=server, error: accept failed",
                 "451 4.7.0 Timeout waiting for client input", "450 TLS negotiation failure",
                 "Ban 203.0.113.40"):
        assert line in everything, line


def test_unknown_code_raises() -> None:
    with pytest.raises(KeyError):
        explain("no-such-code")
