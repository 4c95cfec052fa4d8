"""The lab's preflight (tests/lab/preflight.py) against fake tools on PATH.

Fake tools, not the real ones: the point is a machine where every command exists but one
lacks a capability (Debian's swaks installed without its recommended Perl modules), which a
check by command presence alone passes and the lab then fails in the middle of a scenario.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab import preflight

GOOD_SWAKS = """=== AUTH CRAM-MD5 supported
=== Basic AUTH supported
=== IPv6 supported
=== TLS supported
"""
NO_TLS_SWAKS = """=== AUTH CRAM-MD5 supported
=== Basic AUTH supported
=== IPv6 supported
*** TLS not available: requires Net::SSLeay
"""


def fake_tools(bin_dir: Path, swaks_support: str) -> None:
    """Every lab tool as a shell stub that answers the preflight's questions well."""
    bin_dir.mkdir()
    daemons = bin_dir.parent / "daemons"
    daemons.mkdir()
    (daemons / "tlsmgr").touch()
    scripts = {tool: "exit 0" for tool in preflight.TOOLS}
    scripts["swaks"] = f"/bin/cat <<'X'\n{swaks_support}X"
    scripts["openssl"] = "echo ' -starttls val'"
    scripts["postconf"] = (f'if [ "$1" = -A ]; then echo cyrus; echo dovecot;'
                           f' else echo {daemons}; fi')
    for tool, body in scripts.items():
        path = bin_dir / tool
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight's root branch, without root; sbin is not searched (only the stubs)."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(preflight, "SBIN", ())


def test_all_capable_tools_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                as_root: None) -> None:
    fake_tools(tmp_path / "bin", GOOD_SWAKS)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert preflight.problems() == []
    assert preflight.lab_gate() is None


def test_swaks_without_tls_fails_the_lab_in_one_line(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    as_root: None) -> None:
    fake_tools(tmp_path / "bin", NO_TLS_SWAKS)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert preflight.problems() == [
        "swaks cannot do TLS (TLS not available: requires Net::SSLeay; "
        "install libnet-ssleay-perl and libio-socket-ssl-perl)"]
    gate = preflight.lab_gate()
    assert gate is not None and gate[0] == "fail" and "swaks cannot do TLS" in gate[1]
    # the lab's own gates fail (not skip) as root
    from tests import test_lab, test_live
    with pytest.raises(pytest.fail.Exception, match="swaks cannot do TLS"):
        test_lab.lab_unavailable()
    with pytest.raises(pytest.fail.Exception, match="swaks cannot do TLS"):
        test_live.lab_missing()


def test_missing_tool_and_postfix_without_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              as_root: None) -> None:
    fake_tools(tmp_path / "bin", GOOD_SWAKS)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "daemons" / "tlsmgr").unlink()
    assert [p.split(" (")[0] for p in preflight.problems()] == ["postfix has no TLS"]
    (tmp_path / "bin" / "haproxy").unlink()
    assert preflight.problems() == ["haproxy not installed (install haproxy)"]


def test_without_root_the_lab_is_skipped_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert preflight.lab_gate() == (
        "skip", "the lab needs root (network namespaces, tcpdump, nftables)")


def test_netns_exec_that_cannot_mount_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               as_root: None) -> None:
    """A chroot whose / is no mount point: `ip netns list` works, `ip netns exec` does not."""
    fake_tools(tmp_path / "bin", GOOD_SWAKS)
    (tmp_path / "bin" / "ip").write_text(
        '#!/bin/sh\n[ "$2" = exec ] && { echo \'"mount --make-rslave /" failed\' >&2; exit 255; }'
        "\nexit 0\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert preflight.problems() == [
        '`ip netns exec` does not work here: "mount --make-rslave /" failed']
