"""Exim 4 (Debian's exim4-daemon-light, GnuTLS) from a private root, as the lab's server.

Why these settings: smtp_receive_timeout is Exim's idle timeout for every SMTP command and
data line (it answers "421 <host> SMTP incoming data timeout" / "SMTP command timeout -
closing connection" and closes); set to 5 s so the idle families end quickly. Mail for
lab.example is accepted and blackholed; nobody@ gets 550, grey@ 450 (RCPT ACL).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.lab.mta import DEFERRED, HOSTNAME, IDLE_TIMEOUT, REJECTED, MailServer, privroot, register
from tests.lab.netns import SRV, SRV4, LabError, in_ns, wait_listen
from tests.lab.postfix import make_cert

PACKAGES = ["exim4-daemon-light", "libidn12"]
VERSION = "4.96"

CONFIG = """\
primary_hostname = {host}
exim_user = root
exim_group = root
never_users =
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
pid_file_path = {work}/exim.pid
local_interfaces = <; {addr}.25 ; {addr}.465
tls_on_connect_ports = 465
tls_advertise_hosts = *
tls_certificate = {work}/cert.pem
tls_privatekey = {work}/key.pem
smtp_receive_timeout = {timeout}s
host_lookup =
rfc1413_hosts =
domainlist local_domains = lab.example
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
log_selector = +tls_cipher +smtp_connection +smtp_incomplete_transaction

begin acl
acl_rcpt:
  deny    recipients = {rejected}
          message = 5.1.1 User unknown
  defer   recipients = {deferred}
          message = 4.2.0 Greylisted, try again later
  accept  domains = +local_domains
  deny    message = relay not permitted
acl_data:
  accept

begin routers
blackhole:
  driver = redirect
  domains = +local_domains
  data = :blackhole:
"""


@register
class Exim(MailServer):
    """Exim 4 in SRV on 25 and 465 (implicit TLS), STARTTLS with the lab certificate."""

    name = "exim"
    smtps = True
    proofs = {
        "plain-ok": r"<= sender@example.org",
        "starttls12-ok": r"<= sender@example.org.*X=TLS1\.2",
        "starttls13-ok": r"<= sender@example.org.*X=TLS1\.3",
        "smtps-ok": r"<= sender@example.org.*X=TLS1\.3",
        "reject-5xx": r"rejected RCPT <nobody@lab\.example>",
        "defer-4xx": r"temporarily rejected RCPT <grey@lab\.example>",
        "idle-before-mail": r"SMTP command timeout",
        "tls-silent": r"SMTP command timeout",
        "idle-after-message": r"<= sender@example.org(.|\n)*SMTP command timeout",
        "rst-mid-data": r"(lost while reading message data|Connection reset)",
    }

    def __init__(self) -> None:
        super().__init__()
        self.root = privroot.CACHE / f"exim-{VERSION}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.idle_timeout = IDLE_TIMEOUT

    @property
    def binary(self) -> Path:
        return self.root / "usr/sbin/exim4"

    def install(self) -> None:
        self.root = privroot.ensure("exim", PACKAGES, VERSION)
        # Debian's binary is built with EXIM_USER=Debian-exim, looked up at every start
        # even when exim_user is overridden: create the system user as the package does.
        if subprocess.run(["id", "Debian-exim"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", "Debian-exim"], check=False, timeout=30)
        missing = privroot.missing_libraries(self.root, self.binary)
        if missing:
            raise LabError(f"exim: libraries not found: {', '.join(missing)}")

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "-bV", "-C", "/dev/null"], capture_output=True,
                             text=True, timeout=20, env=privroot.env(self.root)).stdout
        first = out.splitlines()[0] if out else "Exim ?"
        return " ".join(first.split()[:3]).replace("version", "").replace("  ", " ")

    def start(self, workdir: Path) -> None:
        for sub in ("spool", "log"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        make_cert(workdir)
        conf = workdir / "exim.conf"
        conf.write_text(CONFIG.format(host=HOSTNAME, work=workdir, addr=SRV4,
                                      timeout=int(self.idle_timeout), rejected=REJECTED,
                                      deferred=DEFERRED))
        self.log = workdir / "log/mainlog"
        self.proc = subprocess.Popen(in_ns(SRV, [str(self.binary), "-C", str(conf), "-bdf",
                                                 "-q30m"]),
                                     env=privroot.env(self.root), stdout=subprocess.DEVNULL,
                                     stderr=(workdir / "stderr").open("wb"))
        try:
            wait_listen(SRV, 25)
            wait_listen(SRV, 465)
        except LabError as exc:
            self.stop()
            err = (workdir / "stderr").read_text(errors="replace")[-500:]
            paniclog = workdir / "log/paniclog"
            if paniclog.exists():
                err += paniclog.read_text(errors="replace")[-500:]
            raise LabError(f"exim did not start: {exc}: {err}") from exc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


