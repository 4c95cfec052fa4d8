"""Debian packages unpacked into a private root, never installed with dpkg -i.

Why: exim4, opensmtpd and sendmail conflict with the postfix package the Postfix lab
needs; `apt-get download` + `dpkg-deb -x` gives their binaries without touching the
machine's package state. The root lives outside the repository (a cache), a stamp file
makes it idempotent, every command is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.lab.netns import LabError

CACHE = Path(os.environ.get("PCAPSMTP_LAB_CACHE", "/var/cache/pcapsmtp-lab"))
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")


def library_path(root: Path) -> str:
    """LD_LIBRARY_PATH that makes the root's own libraries found first."""
    return ":".join(str(root / d) for d in LIBDIRS)


def env(root: Path) -> dict[str, str]:
    """The environment a binary of the root runs with."""
    return {**os.environ, "LD_LIBRARY_PATH": library_path(root)}


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (subprocess.TimeoutExpired, FileNotFoundError) as exc:
        raise LabError(f"{' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise LabError(f"{' '.join(cmd[:3])}...: {last}")
    return proc.stdout


def ensure(name: str, packages: list[str], version: str = "") -> Path:
    """The private root holding packages (downloaded and unpacked once); its path."""
    root = CACHE / f"{name}-{version or 'current'}"
    stamp = root / ".pcapsmtp-lab-stamp"
    want = " ".join(sorted(packages))
    if stamp.exists() and stamp.read_text() == want:
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise LabError(f"{name}: apt-get/dpkg-deb not available to unpack {want}")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="psl-debs-") as tmp:
        _run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "download", *packages], cwd=Path(tmp))
        for deb in sorted(Path(tmp).glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(root)], timeout=120)
    stamp.write_text(want)
    return root


def missing_libraries(root: Path, binary: Path) -> list[str]:
    """Libraries ldd cannot find for binary under the root's library path."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30,
                          env=env(root))
    return [ln.split()[0] for ln in proc.stdout.splitlines() if "not found" in ln]
