"""OpenSMTPD 6.8 (Debian's opensmtpd, OpenSSL 3) from a private root, as the lab's server.

Why the private mounts: 6.8 has compiled-in paths (/var/spool/smtpd, the privsep chroot
/var/lib/opensmtpd/empty, /var/run/smtpd.sock); `ip netns exec` gives the daemon a mount
namespace of its own, where tmpfs over /var/spool, /var/lib and /run holds them without
touching the machine. Its session timeout is a compiled constant (5 minutes; no smtpd.conf
option in 6.8), so the idle families are left out for it (unsupported, with the reason);
no 450 can be configured without a filter, so defer-4xx is left out too. Accepted mail is
queued for a relay that does not exist in the namespace (never leaves it).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.lab.mta import HOSTNAME, REJECTED, MailServer, privroot, register
from tests.lab.netns import SRV, SRV4, LabError, in_ns, wait_listen
from tests.lab.postfix import make_cert

VERSION = "6.8.0"
FIXED = ("OpenSMTPD 6.8's SMTP session timeout is a compiled 300 s constant (not settable "
         "in smtpd.conf): the family would take 5 minutes")

CONFIG = """\
pki {host} cert "{work}/cert.pem"
pki {host} key "{work}/key.pem"
table rejected {{ "{rejected}" }}
listen on {addr} port 25 tls pki {host} hostname {host}
listen on {addr} port 465 smtps pki {host} hostname {host}
action "out" relay host smtp://127.0.0.1:2
match from any for domain "lab.example" rcpt-to <rejected> reject
match from any for domain "lab.example" action "out"
"""

SETUP = ("mount -t tmpfs tmpfs /var/spool && mount -t tmpfs tmpfs /var/lib && "
         "mount -t tmpfs tmpfs /run && mkdir -p /var/lib/opensmtpd/empty && "
         'exec "$1" -d -f "$2"')


@register
class OpenSMTPD(MailServer):
    """OpenSMTPD in SRV on 25 (STARTTLS) and 465 (smtps)."""

    name = "opensmtpd"
    smtps = True
    unsupported = {"idle-before-mail": FIXED, "idle-after-message": FIXED,
                   "tls-silent": FIXED,
                   "defer-4xx": "no 450 without a filter in OpenSMTPD 6.8"}
    idle_timeout = 300.0
    proofs = {
        "plain-ok": r"smtp message msgid=.*result=Ok",
        "reject-5xx": r"result=PermFail|Invalid recipient",
        "rst-mid-data": r"reason=(io-error|disconnect)",
    }

    def __init__(self) -> None:
        super().__init__()
        self.root = privroot.CACHE / f"opensmtpd-{VERSION}"
        self.proc: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        self.root = privroot.ensure("opensmtpd", ["opensmtpd"], VERSION)
        for user in ("opensmtpd", "opensmtpq"):  # the privsep users the binary looks up
            if subprocess.run(["id", user], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", user], check=False, timeout=30)
        missing = privroot.missing_libraries(self.root, self.root / "usr/sbin/smtpd")
        if missing:
            raise LabError(f"opensmtpd: libraries not found: {', '.join(missing)}")

    def version(self) -> str:
        return f"OpenSMTPD {VERSION} (Debian 6.8.0p2)"

    def start(self, workdir: Path) -> None:
        make_cert(workdir)
        conf = workdir / "smtpd.conf"
        conf.write_text(CONFIG.format(host=HOSTNAME, work=workdir, addr=SRV4,
                                      rejected=REJECTED))
        self.log = workdir / "smtpd.log"
        self.proc = subprocess.Popen(
            in_ns(SRV, ["sh", "-c", SETUP, "sh", str(self.root / "usr/sbin/smtpd"),
                        str(conf)]),
            env=privroot.env(self.root), stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"))
        try:
            wait_listen(SRV, 25)
            wait_listen(SRV, 465)
        except LabError as exc:
            self.stop()
            raise LabError(f"opensmtpd did not start: {exc}: "
                           f"{self.log.read_text(errors='replace')[-500:]}") from exc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
