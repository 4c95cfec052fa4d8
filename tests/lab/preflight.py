"""Check, before the lab builds anything, that every tool it drives can do what it is asked.

A command being on PATH is not enough: Debian's swaks without its recommended Perl modules
runs, but says "TLS not available" and sends in clear, and the lab's TLS scenarios then fail
in the middle with a Postfix log that lacks status=sent. Here each missing capability is one
line naming the piece (and the Debian package that brings it), said before the first namespace.

`problems()` lists them; `lab_gate()` turns them into the tests' decision: without root the
lab is skipped (saying why); as root a missing piece fails the run, so that a CI machine
without the lab's packages cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# tool -> Debian package that brings it (what scripts/test installs by name)
TOOLS = {
    "postfix": "postfix", "postconf": "postfix", "swaks": "swaks", "tcpdump": "tcpdump",
    "nft": "nftables", "ip": "iproute2", "openssl": "openssl", "saslpasswd2": "sasl2-bin",
    "ss": "iproute2", "haproxy": "haproxy",
}
# swaks --support feature -> Perl module package it needs
SWAKS_FEATURES = {
    "TLS": "libnet-ssleay-perl and libio-socket-ssl-perl",
    "IPv6": "libio-socket-inet6-perl",
    "Basic AUTH": "libmime-base64-perl (perl core)",
}
SBIN = ("/usr/sbin", "/sbin")


def _which(tool: str) -> str | None:
    """The tool's path, looking in sbin too (a non-login root shell may lack it)."""
    path = os.environ.get("PATH", "")
    return shutil.which(tool, path=os.pathsep.join([path, *SBIN]))


def _run(argv: list[str]) -> tuple[int, str]:
    """Exit status and combined output; a tool that hangs or cannot start is status 127."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, done.stdout + done.stderr


def swaks_problems(swaks: str) -> list[str]:
    """What `swaks --support` says it cannot do, of the features the lab uses."""
    rc, out = _run([swaks, "--support"])
    lines = out.splitlines()
    found = []
    for feature, pkg in SWAKS_FEATURES.items():
        ok = any(line.startswith("===") and f" {feature} supported" in line for line in lines)
        if not ok:
            why = next((line.strip("* ") for line in lines
                        if f" {feature} not available" in line), f"{feature} not reported")
            found.append(f"swaks cannot do {feature} ({why}; install {pkg})")
    return found


def postfix_problems() -> list[str]:
    """Postfix without its TLS manager or Cyrus SASL cannot run the TLS/AUTH scenarios."""
    rc, out = _run([_which("postconf") or "postconf", "-d", "-h", "daemon_directory"])
    daemons = Path(out.strip().splitlines()[-1]) if rc == 0 and out.strip() else None
    if daemons is None or not (daemons / "tlsmgr").exists():
        return [f"postfix has no TLS (no tlsmgr in {daemons}; install postfix)"]
    rc, out = _run([_which("postconf") or "postconf", "-A"])
    if "cyrus" not in out.split():
        return ["postfix has no Cyrus SASL (postconf -A lacks cyrus; install postfix)"]
    return []


def problems() -> list[str]:
    """Every missing tool or capability the lab needs, one line each; [] when all is there."""
    found = [f"{tool} not installed (install {pkg})"
             for tool, pkg in TOOLS.items() if _which(tool) is None]
    if found:
        return found
    found += swaks_problems(_which("swaks") or "swaks")
    rc, out = _run(["openssl", "s_client", "-help"])
    if "-starttls" not in out:
        found.append("openssl has no s_client -starttls (install openssl)")
    found += postfix_problems()
    rc, out = _run([_which("tcpdump") or "tcpdump", "--version"])
    if rc != 0:
        found.append(f"tcpdump does not run: {out.strip()[:120]}")
    rc, out = _run(["ip", "netns", "list"])
    if rc != 0:
        found.append(f"`ip netns` does not work here: {out.strip()[:120]}")
    if os.geteuid() == 0:
        rc, out = _run([_which("nft") or "nft", "list", "tables"])
        if rc != 0:
            found.append(f"nft does not work here: {out.strip()[:120]}")
        found += netns_exec_problems()
    return found


def netns_exec_problems() -> list[str]:
    """`ip netns list` can work where `ip netns exec` cannot (a chroot whose / is no mount
    point: "mount --make-rslave /" fails): make a namespace of our prefix and run in it."""
    name = f"{os.environ.get('PCAPSMTP_LAB_NS', 'psl')}-preflight"
    _run(["ip", "netns", "del", name])
    rc, out = _run(["ip", "netns", "add", name])
    if rc == 0:
        rc, out = _run(["ip", "netns", "exec", name, "ip", "link", "set", "dev", "lo", "up"])
        _run(["ip", "netns", "del", name])
    if rc != 0:
        return [f"`ip netns exec` does not work here: {' '.join(out.split())[:160]}"]
    return []


def lab_gate() -> tuple[str, str] | None:
    """None when the lab can run; else ("skip", why) without root, ("fail", why) as root."""
    if os.geteuid() != 0:
        return "skip", "the lab needs root (network namespaces, tcpdump, nftables)"
    found = problems()
    if found:
        return "fail", ("lab preflight: " + "; ".join(found)
                        + " (scripts/test installs the lab's packages as root)")
    return None


def skip_reason() -> str | None:
    """For a lab test's set-up: why to skip (no root), or None; as root a missing piece
    fails the test here, in one line, before anything is built."""
    gate = lab_gate()
    if gate is None:
        return None
    if gate[0] == "fail":
        pytest.fail(gate[1], pytrace=False)
    return gate[1]
