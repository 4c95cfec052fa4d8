"""The families x servers matrix of the multi-MTA lab (issue 16; /work/wt/MTA-SPEC.md).

Each family is one client behaviour run against any MailServer; its truth (the verdict a
mail admin should get, by DESIGN.md and issue 16) is the same from both capture points
unless the family says otherwise. The MTA's own log must show the family's proof
(MailServer.proofs) or the run is reported as not having happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.lab import faults
from tests.lab.mta import DEFERRED, REJECTED, MailServer
from tests.lab.netns import CLI4, SRV, SRV4
from tests.lab.scenarios import py, swaks

C = f"{CLI4}:"
S25 = f"{SRV4}:25"


@dataclass
class Family:
    """One client behaviour, its body (returns the client transcript) and truth."""

    name: str
    verdict: str
    body: Callable[[MailServer], str]
    lport: int
    facts: dict[str, Any]
    port: int = 25


def _idle_wait(mta: MailServer) -> float:
    """Bounded client wait: the server's idle timeout plus a margin."""
    return mta.idle_timeout + 5


def _ban(kind: str) -> Callable[[MailServer], str]:
    def body(mta: MailServer) -> str:
        out = swaks(lport=40911 if kind == "drop" else 40921, rcpt=REJECTED)
        action = "drop" if kind == "drop" else "reject with tcp reset"
        rule = f"ip saddr {CLI4} tcp dport 25 tcp flags & (syn|ack) == syn {action}"
        with faults.nft_rules(SRV, "input", [rule]):
            for lport in ((40912, 40913) if kind == "drop" else (40922, 40923)):
                out += py("connect", lport=lport, connect_timeout=3)
        return out
    return body


FAMILIES: list[Family] = [
    Family("plain-ok", "ok", lambda m: swaks(lport=40810), 40810, {"messages_accepted": 1}),
    Family("starttls12-ok", "ok",
           lambda m: swaks("--tls", "--tls-protocol", "tlsv1_2", lport=40820), 40820,
           {"tls_version": "TLSv1.2"}),
    Family("starttls13-ok", "ok", lambda m: swaks("--tls", lport=40830), 40830,
           {"tls_version": "TLSv1.3"}),
    Family("smtps-ok", "ok", lambda m: swaks("--tlsc", port=465, lport=40840), 40840,
           {"tls_version": "TLSv1.3"}, port=465),
    Family("quit-no-mail", "ok-no-mail",
           lambda m: swaks("--quit-after", "EHLO", lport=40850), 40850, {}),
    Family("tls-quit-no-mail", "ok-no-mail",
           lambda m: swaks("--tls", "--quit-after", "TLS", lport=40860), 40860, {}),
    Family("reject-5xx", "smtp-rejected", lambda m: swaks(lport=40870, rcpt=REJECTED), 40870,
           {"stage": "rcpt", "reply": "550"}),
    Family("defer-4xx", "smtp-deferred", lambda m: swaks(lport=40880, rcpt=DEFERRED), 40880,
           {"stage": "rcpt", "reply": "450"}),
    Family("idle-before-mail", "timeout",
           lambda m: py("plain-silent", lport=40890, wait=_idle_wait(m)), 40890,
           {"closed_by": "server"}),
    Family("idle-after-message", "ok",
           lambda m: py("idle-after-message", lport=40895, wait=_idle_wait(m)), 40895,
           {"closed_by": "server", "notes": ["client-idle-timeout"]}),
    Family("tls-silent", "tls-client-silent-after-handshake",
           lambda m: py("tls-silent", lport=40900, wait=_idle_wait(m)), 40900,
           {"closed_by": "server"}),
    Family("rst-mid-data", "tcp-reset", lambda m: py("reset-mid-data", lport=40905), 40905,
           {"reset_by": "client"}),
    Family("ban-drop", "tcp-no-answer", _ban("drop"), 40911, {}),
    Family("ban-reset", "tcp-refused", _ban("reset"), 40921, {}),
]


def by_name() -> dict[str, Family]:
    """Families keyed by name."""
    return {f.name: f for f in FAMILIES}


def sessions(fam: Family, mta: MailServer) -> list[dict[str, Any]]:
    """The truth sessions of one family's capture (the ban families: the failed first
    session, then the banned attempts)."""
    server = f"{SRV4}:{fam.port}"
    if fam.name.startswith("ban-"):
        first = {"client": C + str(fam.lport), "server": server, "verdict": "smtp-rejected",
                 "facts": {"stage": "rcpt", "reply": "550"}}
        banned = [{"client": C + str(fam.lport + i), "server": server,
                   "verdict": fam.verdict, "facts": {}} for i in (1, 2)]
        return [first, *banned]
    return [{"client": C + str(fam.lport), "server": server, "verdict": fam.verdict,
             "facts": dict(fam.facts)}]


def check_proof(fam: Family, mta: MailServer, log: str) -> list[str]:
    """The MTA's own log must show the family happened (its proof regex)."""
    pat = mta.proofs.get(fam.name)
    if pat and not re.search(pat, log):
        return [f"{mta.name}/{fam.name}: log lacks /{pat}/"]
    return []
