"""Mail servers other than Postfix for the multi-MTA lab (issue 16; see MTA-SPEC.md).

Why a base class: the scenario families (tests/lab/mta_scenarios.py) run unchanged
against every MTA; each module (exim, opensmtpd, sendmail, haraka) only says how that MTA
is installed, configured, started, stopped and what its log shows for each family.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

HOSTNAME = "mx.lab.example"
DOMAIN = "lab.example"
REJECTED = "nobody@lab.example"   # every lab MTA answers RCPT with 550
DEFERRED = "grey@lab.example"     # 450 where the MTA can be configured to
IDLE_TIMEOUT = 5.0


class MailServer:
    """One MTA in the server namespace SRV, listening on SRV4:25 (and 465 where it can).

    Subclasses set name, idle_timeout, proofs and implement install/version/start/stop;
    log_size/log_since read self.log (the MTA's own log file, set by start)."""

    name: ClassVar[str] = ""
    idle_timeout: float = IDLE_TIMEOUT
    # family -> regex the MTA's own log shows when the family happened as intended.
    proofs: ClassVar[dict[str, str]] = {}
    # families this MTA cannot take part in, with the reason (recorded, never silent).
    unsupported: ClassVar[dict[str, str]] = {}
    # whether it serves implicit TLS on 465.
    smtps: ClassVar[bool] = False

    def __init__(self) -> None:
        self.log: Path | None = None

    def install(self) -> None:
        """Make the MTA available (private root, npm dir), cached; LabError if impossible."""
        raise NotImplementedError

    def version(self) -> str:
        """The MTA's name and version, e.g. "Exim 4.96", recorded in every truth."""
        raise NotImplementedError

    def start(self, workdir: Path) -> None:
        """Configure in workdir and start in SRV; return once it listens (bounded)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything start started (bounded)."""
        raise NotImplementedError

    def log_size(self) -> int:
        """Current size of the MTA's log, to slice out one family's lines."""
        return self.log.stat().st_size if self.log and self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        """Log text written since offset (after a short settle: logs are written late)."""
        time.sleep(0.3)
        if not self.log or not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


SERVERS: dict[str, type[MailServer]] = {}


def register(cls: type[MailServer]) -> type[MailServer]:
    """Class decorator: add an MTA to SERVERS under its name."""
    SERVERS[cls.name] = cls
    return cls


def load_all() -> dict[str, type[MailServer]]:
    """Import every MTA module present (each registers itself); the registry."""
    import importlib

    for mod in ("exim", "opensmtpd", "sendmail", "haraka"):
        try:
            importlib.import_module(f"tests.lab.mta.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.lab.mta.{mod}":
                raise
    return SERVERS
