"""A real Postfix instance inside the server namespace, configured and owned by the lab.

Why its own config and queue directories: the machine's /etc/postfix stays untouched,
several lab runs cannot interfere, and everything (cert, sasldb, log) is thrown away
with the temp dir.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.lab.netns import SRV, SRV4, SRV4_PROXIED, SRV6, LabError, ns_run, run, wait_port

HOSTNAME = "mx.lab.example"
SASL_USER = "labuser"
SASL_PASSWORD = "S3cret-Lab-Pass!"
PORTS = (25, 587, 465)
SMTPD_TIMEOUT = 5
# The expired certificate (cert-expired scenario): its validity ended this many days before
# the lab run, after a year's validity. Files beside the normal cert.pem/key.pem; main.cf
# names them with $config_directory, so a scenario's overrides need no temp-dir path.
EXPIRED_DAYS_AGO = 30
EXPIRED_CERT, EXPIRED_KEY = "expired-cert.pem", "expired-key.pem"
EXPIRED_OVERRIDES = {"smtpd_tls_cert_file": f"$config_directory/{EXPIRED_CERT}",
                     "smtpd_tls_key_file": f"$config_directory/{EXPIRED_KEY}"}

ACCESS = """\
grey@lab.example 450 4.2.0 Greylisted, try again later
nobody@lab.example 550 5.1.1 User unknown
"""

# Port 25 per address, not the wildcard: the proxied service needs 25 on an address of its
# own (a wildcard listener would hold the port). Postfix there reads HAProxy's PROXY header
# first (smtpd_upstream_proxy_protocol), as a Postfix behind a load balancer does.
MASTER_CF = f"""\
{SRV4}:25 inet n - n - - smtpd
[{SRV6}]:25 inet n - n - - smtpd
{SRV4_PROXIED}:25 inet n - n - - smtpd
  -o smtpd_upstream_proxy_protocol=haproxy
587 inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
465 inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def main_cf(workdir: Path) -> dict[str, str]:
    """The lab's main.cf: accept mail for lab.example and discard it; short timeouts."""
    return {
        "compatibility_level": "3.6",
        "config_directory": str(workdir / "etc"),
        "queue_directory": str(workdir / "queue"),
        "data_directory": str(workdir / "data"),
        "maillog_file": str(workdir / "maillog"),
        "maillog_file_prefixes": str(workdir),
        "myhostname": HOSTNAME,
        "mydomain": "lab.example",
        "myorigin": "$mydomain",
        "mydestination": "",
        "relay_domains": "lab.example",
        "relay_transport": "discard:",
        "default_transport": "discard:",
        "local_transport": "discard:",
        "mynetworks": "127.0.0.0/8 [::1]/128",
        "inet_interfaces": "all",
        "inet_protocols": "all",
        "smtpd_banner": "$myhostname ESMTP Postfix (lab)",
        "smtpd_peername_lookup": "no",
        "smtpd_timeout": f"{SMTPD_TIMEOUT}s",
        "smtpd_starttls_timeout": f"{SMTPD_TIMEOUT}s",
        "smtpd_error_sleep_time": "0",
        "smtpd_recipient_restrictions": (
            f"check_recipient_access texthash:{workdir}/etc/access, "
            "permit_sasl_authenticated, permit_mynetworks, reject_unauth_destination"),
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(workdir / "etc/cert.pem"),
        "smtpd_tls_key_file": str(workdir / "etc/key.pem"),
        "smtpd_tls_loglevel": "1",
        # Old CBC-SHA1 suites refused, as hardened MXes do: the no-shared-cipher case.
        "smtpd_tls_exclude_ciphers": "aNULL, SHA1",
        "smtpd_sasl_type": "cyrus",
        "smtpd_sasl_path": "smtpd",
        "smtpd_sasl_local_domain": "",
        "cyrus_sasl_config_path": str(workdir / "etc/sasl"),
        "broken_sasl_auth_clients": "no",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
    }


def make_cert(etc: Path) -> None:
    """Self-signed RSA certificate for mx.lab.example (the lab's own, never a real CA)."""
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-subj", f"/CN={HOSTNAME}", "-addext", f"subjectAltName=DNS:{HOSTNAME}",
         "-keyout", str(etc / "key.pem"), "-out", str(etc / "cert.pem")])
    os.chmod(etc / "key.pem", 0o600)


def make_expired_cert(etc: Path, days_ago: int = EXPIRED_DAYS_AGO) -> None:
    """Self-signed certificate like make_cert's (RSA 2048, CN and SAN mx.lab.example, what
    `openssl req -x509` adds: key identifiers, CA:TRUE) whose notAfter lies days_ago days
    in the past and notBefore a year before that. Made at lab time, never committed."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    not_after = (dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
                 - dt.timedelta(days=days_ago))
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_after - dt.timedelta(days=365))
            .not_valid_after(not_after)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    keyfile = etc / EXPIRED_KEY
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    os.chmod(keyfile, 0o600)
    (etc / EXPIRED_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_sasldb(etc: Path) -> None:
    """Cyrus sasldb with the lab user; realm = myhostname, which Postfix passes as FQDN."""
    sasl = etc / "sasl"
    sasl.mkdir()
    db = etc / "sasldb2"
    run(["saslpasswd2", "-f", str(db), "-p", "-c", "-u", HOSTNAME, SASL_USER],
        input_=SASL_PASSWORD)
    shutil.chown(db, "root", "postfix")
    os.chmod(db, 0o640)
    (sasl / "smtpd.conf").write_text(
        f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
        f"sasldb_path: {db}\n")


def write_config(workdir: Path, overrides: Mapping[str, str] | None = None) -> None:
    """Write main.cf (with per-scenario overrides) and master.cf."""
    etc = workdir / "etc"
    params = {**main_cf(workdir), **(overrides or {})}
    (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
    (etc / "master.cf").write_text(MASTER_CF)


def auth_plain_b64(user: str = SASL_USER, password: str = SASL_PASSWORD) -> str:
    """The AUTH PLAIN initial response, a secret that must never appear in reports."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Postfix:
    """One Postfix instance in the server namespace (start, restart with overrides, stop)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.etc = workdir / "etc"
        self.log = workdir / "maillog"
        self.running = False
        self.overrides: dict[str, str] = {}
        self.resolver: str | None = None

    def setup(self) -> None:
        """Create dirs, cert, sasldb, config; `postfix check` must pass."""
        os.chmod(self.workdir, 0o755)
        self.etc.mkdir()
        for sub in ("queue", "data"):
            (self.workdir / sub).mkdir()
        shutil.chown(self.workdir / "data", "postfix", "postfix")
        make_cert(self.etc)
        make_expired_cert(self.etc)
        make_sasldb(self.etc)
        (self.etc / "access").write_text(ACCESS)
        write_config(self.workdir)
        self.postfix("check")

    def postfix(self, *args: str) -> str:
        """Run the postfix command for this instance inside the server namespace."""
        return ns_run(SRV, ["postfix", "-c", str(self.etc), *args], timeout=30).stdout

    def start(self, overrides: Mapping[str, str] | None = None,
              resolver: str | None = None) -> None:
        """(Re)start with the given main.cf overrides and wait until every port answers.

        resolver: the text of a resolv.conf for this Postfix alone. `ip netns exec` gives
        each command a private mount namespace (a slave of the host's); the file is
        bind-mounted over /etc/resolv.conf in the one `postfix start` runs in, so only
        the master and the daemons it forks (smtpd: no chroot in MASTER_CF) see it. No
        file of the machine changes, and the next start without a resolver has the
        machine's resolv.conf again."""
        if self.running:
            self.stop()
        write_config(self.workdir, overrides)
        self.overrides = dict(overrides or {})
        self.resolver = resolver
        if resolver is None:
            self.postfix("start")
        else:
            conf = self.etc / "resolv.conf"
            conf.write_text(resolver)
            os.chmod(conf, 0o644)
            ns_run(SRV, ["sh", "-c", 'mount --bind "$1" /etc/resolv.conf && '
                         'exec postfix -c "$2" start', "sh", str(conf), str(self.etc)],
                   timeout=30)
        self.running = True
        for port in PORTS:
            wait_port(SRV, SRV4, port)

    def ensure(self, overrides: Mapping[str, str], resolver: str | None = None) -> None:
        """Running with exactly these overrides and resolver; restart only when something
        differs."""
        if not self.running or dict(overrides) != self.overrides or resolver != self.resolver:
            self.start(overrides, resolver)

    def stop(self) -> None:
        """Stop Postfix and wait (bounded) for the master to exit."""
        if not self.running:
            return
        ns_run(SRV, ["postfix", "-c", str(self.etc), "stop"], check=False, timeout=30)
        pidfile = self.workdir / "queue/pid/master.pid"
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.running = False

    def log_size(self) -> int:
        """Current size of the Postfix log, to slice out one scenario's lines."""
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        """Log text written since offset (postlogd writes asynchronously: settle first)."""
        time.sleep(0.3)
        if not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


@contextmanager
def running_postfix(base: Path | None = None) -> Iterator[Postfix]:
    """A configured and started Postfix that is always stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="psl-postfix-", dir=base))
    pf = Postfix(workdir)
    try:
        pf.setup()
        pf.start()
        yield pf
    finally:
        try:
            pf.stop()
        except LabError:
            pass
        shutil.rmtree(workdir, ignore_errors=True)
