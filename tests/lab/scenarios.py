"""The lab's scenarios: real clients against real Postfix, with real faults in between.

Each scenario knows what it sets up, what the capture must show and what pcapsmtp must
conclude (the truth). The runner captures, checks Postfix's own log to be sure the
scenario happened as intended, and writes NAME.pcap (+ NAME.client.pcap) and
NAME.truth.json.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab import faults
from tests.lab.capture import captures
from tests.lab.netns import (
    CLI,
    CLI4,
    CLI6,
    CLI_IF,
    PUBLIC4,
    RTR,
    RTR4_CLI,
    RTR4_SRV,
    RTR6_SRV,
    RTR_CLI_IF,
    RTR_SRV_IF,
    SRV,
    SRV4,
    SRV4_PROXIED,
    SRV6,
    SRV_IF,
    LabError,
    in_ns,
    ns_run,
    run,
    wait_listen,
    wait_quiet,
    wait_reachable,
)
from tests.lab.postfix import (
    EXPIRED_DAYS_AGO,
    EXPIRED_OVERRIDES,
    SASL_PASSWORD,
    SASL_USER,
    Postfix,
    auth_plain_b64,
)

REPO = Path(__file__).resolve().parents[2]
SERVER25 = f"{SRV4}:25"
CLIENT_TIMEOUT = 40.0


@dataclass
class Ctx:
    """What a scenario body needs: where to write, the Postfix instance, versions."""

    out: Path
    logs: Path
    pf: Postfix
    versions: str = ""


@dataclass
class Scenario:
    """One reproducible situation and the truth pcapsmtp must find in its capture."""

    name: str
    description: str
    how: str
    body: Callable[[Ctx], str]
    sessions: list[dict[str, Any]]
    log_expect: tuple[str, ...] = ()
    # Patterns the client's transcript must show, for what only the client sees (what it
    # made of the server's certificate).
    client_expect: tuple[str, ...] = ()
    two_sided: bool = False
    client_sessions: list[dict[str, Any]] | None = None
    postfix: dict[str, str] = field(default_factory=dict)
    real: bool = True
    iface: str = SRV_IF
    # The namespace the (server-side) capture is taken in: the router for a capture of
    # what a forwarding host sees (dnat-any); its truth then says capture_side "router".
    capture_ns: str = SRV
    snaplen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Set up before the capture starts and undone after it stops (so that its own
    # probes never land in the capture): a network change, a helper daemon.
    around: Callable[[Ctx], AbstractContextManager[Any]] | None = None
    # Set up before Postfix is (re)started for the scenario, undone after the capture
    # stopped: what Postfix must meet from its first connection on (wait_port's probes
    # included). It yields a list that it fills with problems found on the way out.
    setup: Callable[[Ctx], AbstractContextManager[list[str]]] | None = None
    # A resolv.conf for Postfix alone during this scenario (Postfix.start).
    resolver: str | None = None
    # Checks of the capture itself (problems found), for what Postfix's log cannot prove.
    capture_expect: Callable[[Path], list[str]] | None = None
    # Capture-level findings (the report's "findings", across sessions) the capture must
    # carry: {"code": ..., "sessions": [ids]}; and codes it must not carry.
    findings: list[dict[str, Any]] = field(default_factory=list)
    findings_absent: list[str] = field(default_factory=list)


@dataclass
class Result:
    """Outcome of running one scenario: files written and problems found."""

    name: str
    files: list[Path]
    problems: list[str]


def session(client: str | None, server: str, verdict: str, **facts: Any) -> dict[str, Any]:
    """A truth session entry."""
    return {"client": client, "server": server, "verdict": verdict, "facts": facts}


def versions() -> str:
    """Versions of the real software, recorded in every truth file."""
    pf = run(["postconf", "-dh", "mail_version"], check=False).stdout.strip()
    sw = run(["swaks", "--version"], check=False).stdout.split("\n")[0].replace("swaks version ",
                                                                               "")
    ossl = run(["openssl", "version"], check=False).stdout.split()[1]
    hap = "?"
    if shutil.which("haproxy"):
        words = run(["haproxy", "-v"], check=False).stdout.split()
        hap = words[2] if len(words) > 2 else "?"
    return (f"Postfix {pf}, swaks {sw}, OpenSSL {ossl}, HAProxy {hap}, "
            f"Python {platform.python_version()}, Linux {platform.release()}")


def cli(cmd: list[str], timeout: float = CLIENT_TIMEOUT, input_: str | None = None) -> str:
    """Run a client command in the client namespace; its transcript, whatever the exit."""
    try:
        proc = subprocess.run(in_ns(CLI, cmd), capture_output=True, text=True,
                              timeout=timeout, input=input_, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"client timed out after {timeout}s: {' '.join(cmd)}") from exc
    return f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n"


def py(mode: str, port: int = 25, lport: int = 0, host: str = SRV4, **opts: Any) -> str:
    """Run tests.lab.pyclient MODE in the client namespace."""
    cmd = [sys.executable, "-m", "tests.lab.pyclient", mode, host, str(port),
           "--lport", str(lport)]
    for key, value in opts.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cli(cmd)


def swaks(*args: str, server: str = SRV4, port: int = 25, lport: int = 0,
          rcpt: str = "user@lab.example") -> str:
    """Real swaks from the client namespace; short body, fixed local port when given."""
    cmd = ["swaks", "--server", server, "--port", str(port), "--to", rcpt,
           "--from", "sender@example.org", "--ehlo", "client.lab.example",
           "--body", "lab test message", "--timeout", "15"]
    if lport:
        cmd += ["--local-port", str(lport)]
    return cli(cmd + list(args))


# ---------------------------------------------------------------------------- bodies


def body_plain_ok(ctx: Ctx) -> str:
    """swaks, plaintext on 25."""
    return swaks(lport=40010)


def body_starttls_ok(ctx: Ctx) -> str:
    """swaks --tls on 25 (negotiates TLS 1.3)."""
    return swaks("--tls", lport=40020)


def body_tls_client_silent(ctx: Ctx) -> str:
    """Python ssl client: STARTTLS, TLS 1.2 handshake, then silence past smtpd_timeout."""
    return py("tls-silent", lport=40030, wait=12)


def body_starttls_454(ctx: Ctx) -> str:
    """swaks --tls against a Postfix whose TLS key file does not exist."""
    return swaks("--tls", lport=40040)


def body_greylist(ctx: Ctx) -> str:
    """swaks to the greylisted recipient."""
    return swaks(lport=40050, rcpt="grey@lab.example")


def body_reject(ctx: Ctx) -> str:
    """swaks to the unknown recipient."""
    return swaks(lport=40060, rcpt="nobody@lab.example")


def body_auth_plain(ctx: Ctx) -> str:
    """swaks AUTH PLAIN on 587 in plaintext (the password is on the wire, in base64)."""
    return swaks("--auth", "PLAIN", "--auth-user", SASL_USER, "--auth-password", SASL_PASSWORD,
                 port=587, lport=40070)


def body_no_shared_cipher(ctx: Ctx) -> str:
    """openssl s_client offering only old CBC-SHA1 suites that Postfix excludes."""
    return cli(["openssl", "s_client", "-connect", SERVER25, "-starttls", "smtp",
                "-name", "client.lab.example", "-tls1_2", "-cipher", "AES128-SHA:AES256-SHA",
                "-servername", "mx.lab.example"], input_="QUIT\r\n", timeout=20)


def body_cert_name_mismatch(ctx: Ctx) -> str:
    """openssl s_client, TLS 1.2 (the certificate travels in clear), SNI a name the lab's
    certificate (mx.lab.example only) does not hold; QUIT inside TLS (-ign_eof: the line
    is sent, not taken as s_client's Q command, and s_client waits for the server's
    close)."""
    return cli(["openssl", "s_client", "-connect", SERVER25, "-bind", f"{CLI4}:40290",
                "-starttls", "smtp", "-name", "client.lab.example", "-tls1_2",
                "-servername", "other.lab.example", "-ign_eof"], input_="QUIT\r\n",
               timeout=20)


def body_cert_expired(ctx: Ctx) -> str:
    """openssl s_client, TLS 1.2 (the certificate travels in clear), SNI mx.lab.example,
    against Postfix serving the lab's expired certificate; s_client does not verify by
    default (it reports the expiry and goes on); QUIT inside TLS as in cert-name-mismatch."""
    return cli(["openssl", "s_client", "-connect", SERVER25, "-bind", f"{CLI4}:40300",
                "-starttls", "smtp", "-name", "client.lab.example", "-tls1_2",
                "-servername", "mx.lab.example", "-ign_eof"], input_="QUIT\r\n",
               timeout=20)


def body_idle_before_command(ctx: Ctx) -> str:
    """Python client: reads the banner, never sends a command, past smtpd_timeout."""
    return py("banner-silent", lport=40500, wait=12)


def body_idle_after_message(ctx: Ctx) -> str:
    """Python client: one message accepted, then no QUIT, past smtpd_timeout."""
    return py("idle-after-message", lport=40510, wait=12)


def body_tls_close_notify_rst(ctx: Ctx) -> str:
    """Python ssl client, TLS 1.3: EHLO, QUIT and its close_notify before the 221."""
    return py("tls-quit-close-notify", lport=40520, wait=3)


def body_tls12_close_notify_rst(ctx: Ctx) -> str:
    """As tls-close-notify-rst, limited to TLS 1.2."""
    return py("tls-quit-close-notify", lport=40530, wait=3, tls12=1)


def body_not_tls_on_465(ctx: Ctx) -> str:
    """Python client: plaintext EHLO to 465 (wrapper mode), where a ClientHello belongs."""
    return py("plain-to-tls", port=465, lport=40540, wait=8)


def _tls1_client(port: int) -> str:
    """openssl s_client allowed TLS 1.0 only (-tls1; SECLEVEL=0 so that its own OpenSSL 3
    lets it offer TLS 1.0 at all), as an old appliance or sender does."""
    return cli(["openssl", "s_client", "-connect", SERVER25, "-bind", f"{CLI4}:{port}",
                "-starttls", "smtp", "-name", "client.lab.example", "-tls1",
                "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "mx.lab.example",
                "-ign_eof"], input_="QUIT\r\n", timeout=20)


def _tls1_refused(port: int, alert: str, description: int, closed_by: str) -> dict[str, Any]:
    """The truth of a _tls1_client session the server refuses with a fatal ``alert`` to
    its ClientHello; who closed first is a race (s_client exits on the alert while
    Postfix logs and closes), so ``closed_by`` is what the committed capture shows."""
    return session(C + str(port), SERVER25, "tls-handshake-alert", closed_by=closed_by,
                   how="FIN", stage="client-hello", alert=alert,
                   alert_from="server", notes=["old-tls-version"],
                   events=[{"kind": "tls-client-hello", "legacy_version": 0x0301,
                            "versions": [], "sni": "mx.lab.example"},
                           {"kind": "tls-alert", "level": 2, "description": description}],
                   close_race=("s_client exits on the alert while Postfix logs and closes: "
                               "either FIN may come first; this fact is what the committed "
                               "capture shows"))


def body_old_tls_client(ctx: Ctx) -> str:
    """A TLS 1.0-only client; the lab's Postfix excludes SHA-1 suites, the only ones TLS 1.0
    has: no shared cipher."""
    return _tls1_client(40310)


def body_tls_protocol_version(ctx: Ctx) -> str:
    """The same TLS 1.0-only client; this Postfix accepts TLS 1.2 and later only."""
    return _tls1_client(40340)


# slow-banner-dns: Postfix's resolver is a DNS server that never answers. The address sits
# in the client's network beyond the router, whose nftables drop everything sent to it on
# port 53 (silently: no ICMP, so the resolver waits its full timeout). The first rule
# counts the reverse lookup of the client (qname 10.2.0.192.in-addr.arpa: its labels start
# 12 bytes into the DNS message, 20 bytes after the UDP header's start).
DEAD_DNS = "192.0.2.53"
RESOLVER_TIMEOUT = 6
DEAD_RESOLV_CONF = (f"# tests/lab slow-banner-dns: a DNS server that never answers\n"
                    f"nameserver {DEAD_DNS}\noptions timeout:{RESOLVER_TIMEOUT} attempts:1\n")


def _ptr_labels(addr: str) -> str:
    """The wire form of an IPv4 address's reversed labels (no in-addr.arpa), as hex."""
    return b"".join(bytes([len(lbl)]) + lbl.encode() for lbl in reversed(addr.split("."))).hex()


DEAD_DNS_RULES = [
    f"ip daddr {DEAD_DNS} udp dport 53 @th,160,{len(_ptr_labels(CLI4)) * 4} "
    f"0x{_ptr_labels(CLI4)} counter drop",
    f"ip daddr {DEAD_DNS} meta l4proto {{ tcp, udp }} th dport 53 drop",
]


@contextmanager
def dead_resolver(ctx: Ctx) -> Iterator[list[str]]:
    """The router drops all DNS to DEAD_DNS before Postfix starts with it as its resolver
    (Scenario.resolver), so wait_port's own probes cannot draw ICMP errors into the
    capture either; on the way out, the reverse lookup of the client must have been sent
    (the rule's counter), and Postfix is stopped while the drop is still in place: the next
    scenario starts a Postfix with the machine's resolv.conf."""
    found: list[str] = []
    with faults.nft_rules(RTR, "forward", DEAD_DNS_RULES):
        try:
            yield found
            listing = ns_run(RTR, ["nft", "list", "table", "inet", faults.TABLE]).stdout
            counted = re.search(r"counter packets (\d+)", listing)
            if not counted or int(counted.group(1)) == 0:
                found.append(f"slow-banner-dns: no reverse lookup of {CLI4} reached the "
                             "router (its DNS drop counted none): Postfix did not ask DNS")
        finally:
            ctx.pf.stop()


def body_slow_banner_dns(ctx: Ctx) -> str:
    """swaks, plaintext on 25, to a Postfix whose reverse lookup of the client times out."""
    return swaks(lport=40320)


def body_smtps_ok(ctx: Ctx) -> str:
    """swaks --tlsc (TLS on connect) on 465."""
    return swaks("--tlsc", port=465, lport=40090)


def body_reset_mid_data(ctx: Ctx) -> str:
    """Python client: half a body, then RST (SO_LINGER 0)."""
    return py("reset-mid-data", lport=40100)


def body_early_talker(ctx: Ctx) -> str:
    """Python client: EHLO sent right after connect, before the banner."""
    return py("early-talker", lport=40110)


def body_ban_after_failure(ctx: Ctx) -> str:
    """A failed TLS session (old suites), then a fail2ban-style SYN drop, then two retries."""
    out = swaks("--tls", "--tls-protocol", "tlsv1_2", "--tls-cipher", "AES128-SHA:AES256-SHA",
                lport=40120)
    rule = f"ip saddr {CLI4} tcp dport 25 tcp flags & (syn|ack) == syn drop"
    with faults.nft_rules(SRV, "input", [rule]):
        for lport in (40121, 40122):
            out += py("connect", lport=lport, connect_timeout=3)
    return out


@contextmanager
def fake_server(ctx: Ctx) -> Iterator[None]:
    """Replace Postfix on port 25 by tests.lab.pyserver for one scenario, always undone."""
    ctx.pf.stop()
    with helper_process(SRV, ["tests.lab.pyserver", "0.0.0.0", "25"], 25):
        yield


def helper_process(ns: str, module_args: list[str], port: int) -> AbstractContextManager[None]:
    """``python -m MODULE ARGS`` in namespace ns until the block ends (see daemon)."""
    return daemon(ns, [sys.executable, "-m", *module_args], port)


@contextmanager
def daemon(ns: str, cmd: list[str], port: int, log: Path | None = None) -> Iterator[None]:
    """cmd in namespace ns until the block ends, its output to log (or nowhere); ready once
    it listens on port; stopped (terminate, then kill) whatever happens."""
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(in_ns(ns, cmd), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listen(ns, port)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if log:
            out.close()  # type: ignore[union-attr]


def body_server_closes_on_clienthello(ctx: Ctx) -> str:
    """swaks --tls against the FIN-on-ClientHello server."""
    with fake_server(ctx):
        return swaks("--tls", lport=40130)


def body_tls_server_silent(ctx: Ctx) -> str:
    """Router drops client→server TLS application-data records; handshake passes."""
    rule = f"ip saddr {CLI4} tcp dport 25 @ih,0,8 0x17 drop"
    with faults.nft_rules(RTR, "forward", [rule]):
        out = py("tls-ehlo", lport=40140, wait=12, user_timeout=8)
        wait_quiet(CLI)  # the rule stays until the client's socket has given up
        return out


def body_ipv6_any(ctx: Ctx) -> str:
    """swaks over IPv6."""
    return swaks(server=SRV6, lport=40150)


def body_small_snaplen(ctx: Ctx) -> str:
    """swaks plain; the capture's snaplen is 64."""
    return swaks(lport=40160)


def body_starttls_not_followed(ctx: Ctx) -> str:
    """Python client: STARTTLS, 220, then a plaintext EHLO."""
    return py("starttls-plain", lport=40170, wait=12)


def body_plain_timeout(ctx: Ctx) -> str:
    """Python client: EHLO, then silence past smtpd_timeout."""
    return py("plain-silent", lport=40180, wait=12)


def body_tcp_refused(ctx: Ctx) -> str:
    """Server firewall rejects port 587 with a TCP reset."""
    rule = "tcp dport 587 reject with tcp reset"
    with faults.nft_rules(SRV, "input", [rule]):
        return py("connect", port=587, lport=40190, connect_timeout=3)


def pmtu_body(drop_in: str, hook: str, lport: int) -> str:
    """The router's server-side link at MTU 1280 while an nft rule on ``hook`` of namespace
    ``drop_in`` drops ICMP frag-needed; the Python client sends a 6 kB body."""
    rule = "icmp type destination-unreachable icmp code frag-needed drop"
    run(in_ns(RTR, ["ip", "link", "set", "dev", RTR_SRV_IF, "mtu", "1280"]))
    try:
        with faults.nft_rules(drop_in, hook, [rule]):
            out = py("big-data", lport=lport, wait=12, size=6000, user_timeout=9)
            wait_quiet(CLI)
            return out
    finally:
        run(in_ns(RTR, ["ip", "link", "set", "dev", RTR_SRV_IF, "mtu", "1500"]))


def body_pmtu_blackhole(ctx: Ctx) -> str:
    """Router's server-side link MTU 1280, its ICMP frag-needed dropped; a 6 kB body."""
    return pmtu_body(RTR, "output", 40200)


def body_pmtu_icmp_ignored(ctx: Ctx) -> str:
    """The same link, the router's ICMP sent; the client's own firewall drops it on input
    (tcpdump taps before netfilter: the client capture still shows it arrive)."""
    return pmtu_body(CLI, "input", 40260)


def body_starttls_keylog(ctx: Ctx) -> str:
    """Python ssl client logging its TLS keys; the RCPT is rejected inside TLS."""
    keys = ctx.out / "starttls-keylog.keys"
    keys.unlink(missing_ok=True)  # the client appends
    return py("tls-keylog", lport=40230, keylog=str(keys))


def body_bare_lf_end(ctx: Ctx) -> str:
    """Python client: the message ends with a bare-LF "." line."""
    return py("bare-lf-end", lport=40240)


def body_starttls_inject(ctx: Ctx) -> str:
    """Python client: plaintext RSET pipelined behind STARTTLS, then TLS."""
    return py("starttls-inject", lport=40250)


def body_nat_plain(ctx: Ctx) -> str:
    """The router source-NATs the client to its own address and port 50220."""
    rule = f"ip saddr {CLI4} tcp dport 25 snat ip to {RTR4_SRV}:50220"
    with faults.nft_rules(RTR, "postrouting", [rule], kind="nat", priority=100):
        return swaks(lport=40220)


@contextmanager
def pix_proxy() -> Iterator[None]:
    """tests.lab.pixproxy in the router, made transparent by an nft redirect of port 25."""
    args = ["tests.lab.pixproxy", "--listen", "0.0.0.0:2525", "--connect", SERVER25]
    with helper_process(RTR, args, 2525):
        rule = f"ip saddr {CLI4} ip daddr {SRV4} tcp dport 25 redirect to :2525"
        with faults.nft_rules(RTR, "prerouting", [rule], kind="nat", priority=-100):
            yield


def body_pix_fixup(ctx: Ctx) -> str:
    """Pipelined MAIL/RCPT with RCPT split across segments, through the PIX look-alike."""
    with pix_proxy():
        return py("split-rcpt", lport=40210)


HAPROXY_LISTEN = f"{RTR4_CLI}:25"
HAPROXY_SOURCE = f"{RTR4_SRV}:50270"
HAPROXY_CFG = f"""\
# Written by tests/lab (scenario haproxy-proxy); run in the router namespace only.
global
    maxconn 16
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp
    bind {HAPROXY_LISTEN}
    default_backend postfix
backend postfix
    # No 'check': health checks would be sessions of their own in the capture.
    server mx {SRV4_PROXIED}:25 send-proxy-v2 source {HAPROXY_SOURCE}
"""


@contextmanager
def haproxy(ctx: Ctx) -> Iterator[None]:
    """A real HAProxy in the router, in the foreground with the lab's own config file
    (never the machine's haproxy service), stopped whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="psl-haproxy-"))
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG)
    try:
        run(["haproxy", "-c", "-q", "-f", str(cfg)])
        with daemon(RTR, ["haproxy", "-db", "-f", str(cfg)], 25,
                    log=ctx.logs / "haproxy-proxy.haproxy.log"):
            yield
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def body_haproxy_proxy(ctx: Ctx) -> str:
    """swaks to HAProxy in the router, which forwards to Postfix with a PROXY v2 header."""
    return swaks(server=RTR4_CLI, lport=40270)


BRIDGE = "srv-br"


def _ip_json(cmd: list[str]) -> list[dict[str, Any]]:
    return json.loads(ns_run(SRV, ["ip", "-j", *cmd]).stdout or "[]")


def _move_addresses(addrs: list[dict[str, Any]], src: str, dst: str) -> None:
    """Global addresses of src onto dst, in their order (the primary first), and the
    default routes with them."""
    ns_run(SRV, ["ip", "addr", "flush", "dev", src, "scope", "global"])
    for a in addrs:
        extra = ["nodad"] if a["family"] == "inet6" else []
        ns_run(SRV, ["ip", "addr", "add", f"{a['local']}/{a['prefixlen']}", "dev", dst,
                     *extra])
    ns_run(SRV, ["ip", "route", "replace", "default", "via", RTR4_SRV, "dev", dst])
    ns_run(SRV, ["ip", "-6", "route", "replace", "default", "via", RTR6_SRV, "dev", dst])


@contextmanager
def server_on_bridge(ctx: Ctx) -> Iterator[None]:
    """The server's interface becomes a port of a Linux bridge that takes its addresses
    (and MAC), as on a host whose NIC is bridged for containers; undone afterwards."""
    (link,) = _ip_json(["link", "show", "dev", SRV_IF])
    addrs = [a for a in _ip_json(["addr", "show", "dev", SRV_IF])[0]["addr_info"]
             if a.get("scope") == "global"]
    ns_run(SRV, ["ip", "link", "add", "name", BRIDGE, "address", link["address"],
                 "type", "bridge", "stp_state", "0"])
    try:
        ns_run(SRV, ["ip", "link", "set", "dev", SRV_IF, "master", BRIDGE])
        ns_run(SRV, ["ip", "link", "set", "dev", BRIDGE, "up"])
        _move_addresses(addrs, SRV_IF, BRIDGE)
        wait_reachable()
        yield
    finally:
        _move_addresses(addrs, BRIDGE, SRV_IF)
        ns_run(SRV, ["ip", "link", "set", "dev", SRV_IF, "nomaster"])
        ns_run(SRV, ["ip", "link", "del", "dev", BRIDGE])
        wait_reachable()


def body_any_bridge_dup(ctx: Ctx) -> str:
    """swaks plaintext to Postfix behind the bridge."""
    return swaks(lport=40280)


def duplicated_on_two_interfaces(pcap: Path) -> list[str]:
    """Every TCP segment of the capture is there twice, on two interface indexes
    (SLL2), the copy within 1 ms: what any-bridge-dup must show."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import CookedLinuxV2
    from scapy.utils import PcapReader

    seen: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    with PcapReader(str(pcap)) as reader:
        for pkt in reader:
            if TCP not in pkt or CookedLinuxV2 not in pkt:
                continue
            tcp = pkt[TCP]
            key = (tcp.underlayer.src, tcp.sport, tcp.seq, tcp.ack, int(tcp.flags),
                   len(tcp.payload))
            seen.setdefault(key, []).append((pkt[CookedLinuxV2].ifindex, float(pkt.time)))
    single = [k for k, copies in seen.items()
              if len({i for i, _ in copies}) < 2
              or max(t for _, t in copies) - min(t for _, t in copies) > 0.001]
    if not seen:
        return [f"{pcap.name}: no TCP segments in a cooked (SLL2) capture"]
    if single:
        return [f"{pcap.name}: {len(single)} of {len(seen)} TCP segments not seen twice on "
                f"two interfaces within 1 ms (first: {single[0]})"]
    return []


DNAT_RULE = f"ip daddr {PUBLIC4} tcp dport 25 counter dnat ip to {SERVER25}"


@contextmanager
def dnat_public(ctx: Ctx) -> Iterator[None]:
    """The router holds the public address PUBLIC4 (on its client-side interface, as a
    Docker host holds its own address) and DNATs port 25 there to Postfix, in a prerouting
    nat chain, as Docker does for a published port; address and rule are removed
    afterwards whatever happens (the client's default route already leads to the router)."""
    ns_run(RTR, ["ip", "addr", "add", f"{PUBLIC4}/32", "dev", RTR_CLI_IF])
    try:
        with faults.nft_rules(RTR, "prerouting", [DNAT_RULE], kind="nat", priority=-100):
            yield
    finally:
        ns_run(RTR, ["ip", "addr", "del", f"{PUBLIC4}/32", "dev", RTR_CLI_IF], check=False)


def body_dnat_any(ctx: Ctx) -> str:
    """swaks plaintext to the router's public address; the router forwards it to Postfix."""
    return swaks(server=PUBLIC4, lport=40330)


def translated_on_two_interfaces(pcap: Path) -> list[str]:
    """Every TCP segment of the capture is there twice, on two interface indexes (SLL2),
    the copy within 1 ms: once with PUBLIC4 as the server's address and once with SRV4,
    with the same client port, seq, ack, flags and length: what dnat-any must show."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import CookedLinuxV2
    from scapy.utils import PcapReader

    seen: dict[tuple[Any, ...], list[tuple[str, int, float]]] = {}
    with PcapReader(str(pcap)) as reader:
        for pkt in reader:
            if TCP not in pkt or IP not in pkt or CookedLinuxV2 not in pkt:
                continue
            ip, tcp = pkt[IP], pkt[TCP]
            to_server = ip.src == CLI4
            key = (to_server, tcp.sport, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags),
                   len(tcp.payload))
            other = ip.dst if to_server else ip.src
            seen.setdefault(key, []).append((other, pkt[CookedLinuxV2].ifindex,
                                             float(pkt.time)))
    bad = [k for k, copies in seen.items()
           if sorted(a for a, _, _ in copies) != sorted([PUBLIC4, SRV4])
           or len({i for _, i, _ in copies}) < 2
           or max(t for _, _, t in copies) - min(t for _, _, t in copies) > 0.001]
    if not seen:
        return [f"{pcap.name}: no TCP segments in a cooked (SLL2) capture"]
    if bad:
        return [f"{pcap.name}: {len(bad)} of {len(seen)} TCP segments not seen once to/from "
                f"{PUBLIC4} and once to/from {SRV4} on two interfaces within 1 ms "
                f"(first: {bad[0]}: {seen[bad[0]]})"]
    return []


# ---------------------------------------------------------------------------- the table

C = f"{CLI4}:"
RACE = ("after QUIT/221 (or the TLS close_notify) either side's FIN may come first; this "
        "fact is what the committed capture shows, regenerations may differ")
TLS_OK_REASON = (
    " After STARTTLS everything is encrypted: the capture proves a completed handshake, "
    "application data both ways and an orderly close, not that a message was accepted "
    "(the lab's Postfix log shows it was). Truth says `ok`: nothing died; the tool should "
    "say that message acceptance is not visible.")

CN_RST = ("the client sent QUIT and its close_notify together, without waiting for the 221; "
          "Postfix answered 221, sent its own close_notify and closed with the client's "
          "close_notify unread, so its kernel sent RST instead of FIN: teardown, not a reset "
          "verdict")

SCENARIOS: list[Scenario] = [
    Scenario(
        "plain-ok", "One message in plaintext on port 25, then QUIT.",
        "swaks plaintext to Postfix on 25; server-side capture.",
        body_plain_ok,
        [session(C + "40010", SERVER25, "ok", closed_by="server", how="FIN", stage="quit",
                 messages_accepted=1, close_race=RACE,
                 # control for slow-banner-dns: no lookup, the greeting at once
                 notes_absent=["slow-banner"])],
        log_expect=(r"status=sent",)),
    Scenario(
        "starttls-ok", "STARTTLS on 25, TLS 1.3, one message, QUIT." + TLS_OK_REASON,
        "swaks --tls to Postfix on 25 (TLS 1.3 negotiated); server-side capture.",
        body_starttls_ok,
        [session(C + "40020", SERVER25, "ok", closed_by="client", how="FIN",
                 stage="tls-established", tls_version="TLSv1.3",
                 message_accepted="not visible (encrypted)", close_race=RACE)],
        log_expect=(r"Anonymous TLS connection established.*TLSv1\.3", r"status=sent")),
    Scenario(
        "tls-client-silent",
        "STARTTLS, TLS 1.2 handshake completes, then the client sends no record. Postfix "
        "gives up after smtpd_timeout (5 s) and sends its encrypted 421, then closes.",
        "Python ssl client (OpenSSL) limited to TLS 1.2 sleeps after the handshake; real "
        "Postfix times out; server-side capture.",
        body_tls_client_silent,
        [session(C + "40030", SERVER25, "tls-client-silent-after-handshake",
                 closed_by="server", how="FIN", stage="tls-established",
                 tls_version="TLSv1.2", server_waited_s=5,
                 # control for cert-name-mismatch: SNI mx.lab.example, the certificate's name
                 notes_absent=["certificate-name-mismatch"])],
        log_expect=(r"timeout after (STARTTLS|END-OF-MESSAGE|CONNECT)",)),
    Scenario(
        "starttls-454",
        "STARTTLS is advertised but answered 454 4.7.0 TLS not available due to local "
        "problem (the TLS key file is missing).",
        "swaks --tls to Postfix whose smtpd_tls_key_file points to a missing file; "
        "server-side capture.",
        body_starttls_454,
        [session(C + "40040", SERVER25, "starttls-refused", closed_by="client", how="FIN",
                 stage="starttls", reply="454")],
        postfix={"smtpd_tls_key_file": "/nonexistent/lab-key.pem"},
        log_expect=(r"starttls=0/1",)),
    Scenario(
        "greylist-450", "Recipient greylisted: RCPT answered 450 4.2.0.",
        "swaks to grey@lab.example; Postfix check_recipient_access answers 450; "
        "server-side capture.",
        body_greylist,
        [session(C + "40050", SERVER25, "smtp-deferred", closed_by="server", how="FIN",
                 stage="rcpt", reply="450")],
        log_expect=(r"NOQUEUE: reject: RCPT .* 450 4\.2\.0",)),
    Scenario(
        "reject-550", "Recipient unknown: RCPT answered 550 5.1.1.",
        "swaks to nobody@lab.example; Postfix check_recipient_access answers 550; "
        "server-side capture.",
        body_reject,
        [session(C + "40060", SERVER25, "smtp-rejected", closed_by="server", how="FIN",
                 stage="rcpt", reply="550")],
        log_expect=(r"NOQUEUE: reject: RCPT .* 550 5\.1\.1",)),
    Scenario(
        "auth-plain-587",
        "Submission on 587 without TLS: AUTH PLAIN with the lab's known password (in "
        "base64 on the wire), then one message. No pcapsmtp output may show the secrets.",
        "swaks --auth PLAIN to Postfix 587 (Cyrus sasldb, smtpd_tls_auth_only=no); "
        "server-side capture.",
        body_auth_plain,
        [session(C + "40070", f"{SRV4}:587", "ok", closed_by="server", how="FIN",
                 stage="quit", auth="PLAIN", messages_accepted=1)],
        log_expect=(r"sasl_method=PLAIN, sasl_username=labuser", r"status=sent"),
        extra={"secrets": [SASL_PASSWORD, auth_plain_b64()]}),
    Scenario(
        "tls-no-shared-cipher",
        "The client offers only old CBC-SHA1 suites (AES128-SHA, AES256-SHA) with TLS 1.2; "
        "Postfix excludes them, so OpenSSL answers the ClientHello with a fatal "
        "handshake_failure alert.",
        "openssl s_client -starttls smtp -tls1_2 -cipher AES128-SHA:AES256-SHA to Postfix "
        "with smtpd_tls_exclude_ciphers = aNULL, SHA1; server-side capture. s_client cannot "
        "fix its source port, so the client port is null.",
        body_no_shared_cipher,
        [session(None, SERVER25, "tls-handshake-alert", closed_by="server", how="FIN",
                 stage="client-hello", alert="handshake_failure", alert_from="server",
                 # control for old-tls-client: this ClientHello offers TLS 1.2
                 notes_absent=["old-tls-version"])],
        log_expect=(r"SSL_accept error|no shared cipher",)),
    Scenario(
        "smtps-465-ok", "Implicit TLS on 465 (TLS 1.3), one message, QUIT." + TLS_OK_REASON,
        "swaks --tlsc to Postfix 465 (smtpd_tls_wrappermode=yes); server-side capture.",
        body_smtps_ok,
        [session(C + "40090", f"{SRV4}:465", "ok", closed_by="client", how="FIN",
                 stage="tls-established", tls_version="TLSv1.3",
                 message_accepted="not visible (encrypted)", close_race=RACE)],
        log_expect=(r"TLS connection established", r"status=sent")),
    Scenario(
        "reset-mid-data", "The client sends half a message body after 354, then resets.",
        "Python client closes with SO_LINGER 0 (kernel RST) in the middle of DATA; real "
        "Postfix logs lost connection after DATA; server-side capture.",
        body_reset_mid_data,
        [session(C + "40100", SERVER25, "tcp-reset", closed_by="client", how="RST",
                 stage="data")],
        log_expect=(r"lost connection after DATA",)),
    Scenario(
        "early-talker", "The client sends EHLO before the server's 220 banner.",
        "Python client writes EHLO right after connect; Postfix pauses before its greeting "
        "(smtpd_client_restrictions = sleep 1, reject_unauth_pipelining with "
        "smtpd_delay_reject = no, Postfix's documented pre-greeting test), sees the early "
        "command and logs improper command pipelining after CONNECT; server-side capture.",
        body_early_talker,
        [session(C + "40110", SERVER25, "pipelining-violation", closed_by="server",
                 how="FIN", stage="banner", early_command="EHLO",
                 replies=["503 5.5.0 (instead of the 220 greeting)", "503 5.7.0", "221"])],
        postfix={"smtpd_client_restrictions": "sleep 1, reject_unauth_pipelining",
                 "smtpd_delay_reject": "no"},
        log_expect=(r"improper command pipelining after CONNECT",)),
    Scenario(
        "ban-after-failure",
        "A sender offering only old suites fails the TLS handshake (handshake_failure alert); "
        "then a fail2ban-style rule drops its SYNs, so its two retries get no SYN-ACK.",
        "swaks --tls --tls-protocol tlsv1_2 --tls-cipher AES128-SHA:AES256-SHA, then an nft "
        "rule in the server namespace (input: SYN from 192.0.2.10 to 25 dropped), then two "
        "Python connects with a 3 s timeout; server-side capture (the SYNs are seen before "
        "nftables drops them).",
        body_ban_after_failure,
        [session(C + "40120", SERVER25, "tls-handshake-alert", closed_by="server", how="FIN",
                 stage="client-hello", alert="handshake_failure", alert_from="server"),
         session(C + "40121", SERVER25, "tcp-no-answer", closed_by="none", how="none",
                 stage="connect"),
         session(C + "40122", SERVER25, "tcp-no-answer", closed_by="none", how="none",
                 stage="connect")],
        log_expect=(r"SSL_accept error|no shared cipher",),
        # the pattern across the three sessions: the failure, then the unanswered retries
        findings=[{"code": "ban-after-failure", "sessions": [1, 2, 3]}],
        findings_absent=["retry-storm", "nat-copy"]),
    Scenario(
        "server-closes-on-clienthello",
        "STARTTLS answered 220, then the server closes (FIN, no alert) when the ClientHello "
        "arrives.",
        "Real Postfix/OpenSSL always answers a bad ClientHello with an alert, so a small "
        "Python server (tests/lab/pyserver.py) on a real TCP stack plays the server: it "
        "reads the ClientHello and closes. Client: real swaks --tls. Server-side capture.",
        body_server_closes_on_clienthello,
        [session(C + "40130", SERVER25, "tls-closed-during-handshake", closed_by="server",
                 how="FIN", stage="client-hello",
                 after_close="the client answers the FIN with a decode_error alert, the "
                             "server's stack with RST")],
        real=False),
    Scenario(
        "tls-server-silent",
        "THE case from the design: the TLS 1.2 handshake completes, the client sends its "
        "first encrypted record (EHLO), a router drops it (and its retransmissions). The "
        "server capture shows a client that never spoke; the client capture shows a server "
        "that never acknowledged the record. Postfix times out after 5 s and sends 421. "
        "Server side, one clue remains: the client's duplicate ACK carries seq 368 while the "
        "server only ever received up to 314, so 54 bytes (one record) left the client and "
        "never arrived; the verdict stays tls-client-silent-after-handshake (what the server "
        "saw), and a good report notes the gap and asks for a client-side capture. Client "
        "side the verdict is the same (the server acted as toward a silent client: its only "
        "later record is its timeout), and the summary says the record went unacknowledged "
        "and that this capture cannot show the server silent (issue 16).",
        "Python ssl client (TLS 1.2) through the lab router, where nftables drops "
        "client→server TCP segments whose payload starts with 0x17 (@ih,0,8 0x17). "
        "Captures on both sides: NAME.pcap (server) and NAME.client.pcap (client).",
        body_tls_server_silent,
        [session(C + "40140", SERVER25, "tls-client-silent-after-handshake",
                 closed_by="server", how="FIN", stage="tls-established",
                 tls_version="TLSv1.2", server_waited_s=5)],
        two_sided=True,
        client_sessions=[session(C + "40140", SERVER25, "tls-client-silent-after-handshake",
                                 closed_by="server", how="FIN", stage="tls-established",
                                 tls_version="TLSv1.2", client_record_acked=False)],
        log_expect=(r"timeout after STARTTLS|timeout after CONNECT",)),
    Scenario(
        "ipv6-any", "One message over IPv6, captured on the 'any' pseudo-interface (SLL2).",
        "swaks -s 2001:db8:2::25; tcpdump -i any in the server namespace; server side.",
        body_ipv6_any,
        [session(f"[{CLI6}]:40150", f"[{SRV6}]:25", "ok", closed_by="client", how="FIN",
                 stage="quit", messages_accepted=1, close_race=RACE)],
        iface="any", log_expect=(r"status=sent",)),
    Scenario(
        "small-snaplen", "A normal message, captured with snaplen 64: payloads are cut.",
        "swaks plaintext to Postfix 25; tcpdump -s 64 on the server side.",
        body_small_snaplen,
        [session(C + "40160", SERVER25, "capture-incomplete", closed_by="server", how="FIN",
                 stage="quit", snaplen=64)],
        snaplen=64, log_expect=(r"status=sent",)),
    Scenario(
        "starttls-not-followed",
        "STARTTLS answered 220, then the client sends a plaintext EHLO instead of a "
        "ClientHello.",
        "Python client; real Postfix fails SSL_accept on the plaintext; server-side capture.",
        body_starttls_not_followed,
        [session(C + "40170", SERVER25, "starttls-not-followed", closed_by="server",
                 how="RST", stage="starttls")],
        log_expect=(r"SSL_accept error|lost connection after STARTTLS",)),
    Scenario(
        "plain-timeout", "EHLO, then the client says nothing; Postfix times out after 5 s.",
        "Python client goes silent after EHLO; Postfix writes 421 4.4.2 Error: timeout "
        "exceeded and closes; server-side capture.",
        body_plain_timeout,
        [session(C + "40180", SERVER25, "timeout", closed_by="server", how="FIN",
                 stage="ehlo", silent="client", server_waited_s=5)],
        log_expect=(r"timeout after EHLO",)),
    Scenario(
        "tcp-refused", "SYN to 587 answered by RST (firewall reject).",
        "nft rule in the server namespace: tcp dport 587 reject with tcp reset; Python "
        "connect; server-side capture.",
        body_tcp_refused,
        [session(C + "40190", f"{SRV4}:587", "tcp-refused", closed_by="server", how="RST",
                 stage="connect")]),
    Scenario(
        "pmtu-blackhole",
        "A path MTU black hole: the router's link towards the server has MTU 1280 and the "
        "router's ICMP fragmentation-needed messages are dropped, so the client's full-size "
        "(1500-byte) DATA segments never arrive while small ones pass. The client "
        "retransmits them unacknowledged; Postfix times out waiting for the message. "
        "Server side, the capture shows the client's last (small) segment arriving out of "
        "order, the server SACKing it, and a hole of four full-size segments never filled "
        "before the 421 timeout: the server's own SACK proves the host, not just the "
        "capture, missed those bytes, so this is not capture-incomplete nor a plain silent "
        "client; truth says pmtu-blackhole on both sides (client side: the retransmissions "
        "of the 1448-byte segments are visible too).",
        "ip link set rtr-srv mtu 1280 and an nft output rule dropping ICMP frag-needed in the "
        "router; Python client sends a 6 kB body in one write (TCP_USER_TIMEOUT 9 s). "
        "Captures on both sides: NAME.pcap (server) and NAME.client.pcap (client).",
        body_pmtu_blackhole,
        [session(C + "40200", SERVER25, "pmtu-blackhole", closed_by="server", how="FIN",
                 stage="data", server_waited_s=5, hole_never_filled=True)],
        two_sided=True,
        client_sessions=[session(C + "40200", SERVER25, "pmtu-blackhole", closed_by="server",
                                 how="FIN", stage="data", path_mtu=1280)],
        log_expect=(r"timeout after DATA",)),
    Scenario(
        "pmtu-icmp-ignored",
        "A path MTU black hole made by the sending host itself: the router's link towards "
        "the server has MTU 1280 and the router does send ICMP fragmentation-needed "
        "(next-hop MTU 1280) to the client, but the client's own firewall drops ICMP "
        "destination-unreachable/frag-needed on input, as host firewalls that drop all ICMP "
        "do. tcpdump taps before netfilter, so the client-side capture shows the ICMP "
        "arriving and the client still retransmitting its full-size (1448-byte) DATA "
        "segments: truth says pmtu-blackhole there, its evidence pointing at the ICMP (the "
        "client ignored or dropped it; the advice is the client's firewall, not the path). "
        "The server side sees what pmtu-blackhole.pcap shows -- the small tail segment "
        "arriving out of order, a hole of full-size segments never filled, Postfix's 421 "
        "after 5 s -- and no ICMP at all (it went to the client): pmtu-blackhole from the "
        "hole, as there.",
        "ip link set rtr-srv mtu 1280 in the router (its ICMP not filtered); an nft input "
        "rule in the client namespace dropping ICMP frag-needed; Python client sends a 6 kB "
        "body in one write (TCP_USER_TIMEOUT 9 s). Captures on both sides: NAME.pcap "
        "(server) and NAME.client.pcap (client).",
        body_pmtu_icmp_ignored,
        [session(C + "40260", SERVER25, "pmtu-blackhole", closed_by="server", how="FIN",
                 stage="data", server_waited_s=5, hole_never_filled=True, icmp_seen=False)],
        two_sided=True,
        client_sessions=[session(C + "40260", SERVER25, "pmtu-blackhole", closed_by="server",
                                 how="FIN", stage="data", path_mtu=1280,
                                 icmp_too_big={"router": "192.0.2.1", "mtu": 1280,
                                               "dropped_by": "the client's nft input rule"},
                                 evidence_kinds=["icmp-too-big"])],
        log_expect=(r"timeout after DATA",)),
    Scenario(
        "starttls-keylog",
        "STARTTLS (TLS 1.2), then EHLO, MAIL and a RCPT that Postfix rejects with 550, QUIT "
        "-- all inside TLS. Without keys the capture shows an encrypted dialogue that closed "
        "in order (ok: acceptance cannot be seen); with the key-log file next to it "
        "(starttls-keylog.keys, SSLKEYLOGFILE format) `pcapsmtp analyze --keylog` shows the "
        "inner dialogue and the 550.",
        "Python ssl client (SSLContext.keylog_filename) to Postfix on 25; server-side "
        "capture; the keys are only for this throw-away lab session.",
        body_starttls_keylog,
        [session(C + "40230", SERVER25, "ok", closed_by="server", how="FIN",
                 stage="quit", inner="RCPT answered 550 inside TLS", close_race=RACE)],
        extra={"keylog": {"file": "starttls-keylog.keys", "verdicts": ["smtp-rejected"]}},
        log_expect=(r"NOQUEUE: reject: RCPT",)),
    Scenario(
        "bare-lf-end",
        "One message whose end-of-data line is '\\n.\\n' (bare LFs, not CRLF), as SMTP "
        "smuggling sends it; Postfix with smtpd_forbid_bare_newline = no (its default before "
        "3.9) takes it as the end of the data and queues the message. The verdict is ok; "
        "the report carries a bare-lf-end-of-data note with the 250.",
        "Python client to Postfix on 25 (smtpd_forbid_bare_newline = no set explicitly); "
        "server-side capture.",
        body_bare_lf_end,
        [session(C + "40240", SERVER25, "ok", closed_by="server", how="FIN", stage="quit",
                 messages_accepted=1, notes=["bare-lf-end-of-data"], close_race=RACE)],
        postfix={"smtpd_forbid_bare_newline": "no"},
        log_expect=(r"status=sent",)),
    Scenario(
        "starttls-inject",
        "STARTTLS with a plaintext RSET pipelined behind it in the same segment (the "
        "CVE-2011-0411 probe that scanners send to MX hosts), then a normal TLS 1.3 session: "
        "EHLO and QUIT inside TLS. Postfix discards the RSET; the verdict is ok-no-mail (the "
        "record sizes are too small for a message) with a "
        "plaintext-after-starttls note, and the ClientHello is read where it starts.",
        "Python client to Postfix on 25; server-side capture.",
        body_starttls_inject,
        [session(C + "40250", SERVER25, "ok-no-mail", closed_by="server", how="FIN",
                 stage="tls-established", notes=["plaintext-after-starttls"],
                 close_race=RACE)],
        log_expect=(r"TLS connection established",)),
    Scenario(
        "nat-plain",
        "One message in plaintext through a router that source-NATs the client: the server "
        "sees 198.51.100.1:50220, the client 192.0.2.10:40220. For `pcapsmtp compare`: the "
        "two captures must still be matched as one session, with nothing lost or changed.",
        "swaks through the lab router with an nft `snat ip to 198.51.100.1:50220` rule "
        "(postrouting). Captures on both sides: NAME.pcap (server) and NAME.client.pcap "
        "(client).",
        body_nat_plain,
        [session(f"{RTR4_SRV}:50220", SERVER25, "ok", closed_by="server", how="FIN",
                 stage="quit", messages_accepted=1, close_race=RACE)],
        two_sided=True,
        client_sessions=[session(C + "40220", SERVER25, "ok", closed_by="server", how="FIN",
                                 stage="quit", messages_accepted=1, close_race=RACE)],
        log_expect=(r"status=sent",)),
    Scenario(
        "pix-fixup",
        "A Cisco PIX 'fixup smtp' look-alike in the router: the banner is masked with "
        "asterisks, STARTTLS in the EHLO reply becomes XXXXXXXA, and a pipelined RCPT split "
        "across two TCP segments reaches Postfix as 'XX' + 'XX TO:<...>'.",
        "Not a real PIX: tests/lab/pixproxy.py (a proxy that judges each TCP segment on its "
        "own) runs in the router; an nft redirect sends 192.0.2.10 → 198.51.100.25:25 to it, "
        "and it connects to Postfix from 198.51.100.1. Python client pipelines MAIL/RCPT "
        "with the second RCPT split across segments. Captures on both sides: NAME.pcap "
        "(server: proxy ↔ Postfix) and NAME.client.pcap (client ↔ proxy).",
        body_pix_fixup,
        [session(None, SERVER25, "middlebox-rewrite", closed_by="server", how="FIN",
                 stage="quit", client_addr="198.51.100.1 (the proxy, ephemeral port)",
                 rewritten="RC|PT TO: arrives as XX|XX TO: at a segment boundary",
                 reply="500 5.5.2")],
        two_sided=True,
        client_sessions=[session(C + "40210", SERVER25, "middlebox-rewrite",
                                 closed_by="server", how="FIN", stage="quit",
                                 rewritten="220 **** banner, XXXXXXXA")],
        real=False,
        log_expect=(r"connect from unknown\[198\.51\.100\.1\]",)),
    Scenario(
        "haproxy-proxy",
        "One message through a real HAProxy (mode tcp) in the router, which forwards to "
        "Postfix with a PROXY protocol v2 header (send-proxy-v2); Postfix reads it "
        "(smtpd_upstream_proxy_protocol = haproxy) and logs the original client. Server "
        "side the header is the client's first bytes, before the 220 greeting -- v2's "
        "12-byte signature is \\r\\n\\r\\n\\0\\r\\nQUIT\\n -- so read as SMTP the session "
        "looked like an early talker. The verdict is ok, the proxy-header event names the "
        "swaks client 192.0.2.10:40270 (the session's client is HAProxy's 198.51.100.1:50270) "
        "and the note behind-proxy says so; no early-talker note (pipelining-violation or "
        "pipelining-tolerated: before dissectors/proxy.py the header was read as a command "
        "sent before the greeting, and this session got pipelining-tolerated).",
        "swaks to 192.0.2.1:25, where HAProxy (foreground, the lab's own config, `server mx "
        "198.51.100.26:25 send-proxy-v2 source 198.51.100.1:50270`, no health checks) "
        "listens in the router namespace; Postfix serves 198.51.100.26:25 with -o "
        "smtpd_upstream_proxy_protocol=haproxy (198.51.100.25:25 stays plain); "
        "server-side capture (HAProxy to Postfix).",
        body_haproxy_proxy,
        [session(f"{RTR4_SRV}:50270", f"{SRV4_PROXIED}:25", "ok", closed_by="server",
                 how="FIN", stage="quit", messages_accepted=1, proxy_version=2,
                 notes=["behind-proxy"],
                 notes_absent=["pipelining-violation", "pipelining-tolerated"],
                 events=[{"kind": "proxy-header", "version": 2, "command": "PROXY",
                          "source": f"{CLI4}:40270", "destination": HAPROXY_LISTEN}],
                 close_race=RACE)],
        around=haproxy,
        log_expect=(r"connect from unknown\[192\.0\.2\.10\]", r"status=sent")),
    Scenario(
        "cert-name-mismatch",
        "STARTTLS on 25 with TLS 1.2, so the server's certificate travels in clear; the "
        "client's SNI is other.lab.example, a name the lab's certificate (CN and only SAN "
        "mx.lab.example) does not hold. Postfix has no SNI map and serves its one "
        "certificate anyway; the handshake completes and the client sends QUIT inside TLS. "
        "Postfix answers 221 and closes (close_notify, FIN); s_client's own close_notify "
        "then meets the closed socket (RST). Nothing died: the verdict is ok-no-mail (the "
        "record sizes are too small for a message) and the report "
        "carries a certificate-name-mismatch note (SNI other.lab.example, certificate "
        "mx.lab.example).",
        "openssl s_client -starttls smtp -tls1_2 -servername other.lab.example -ign_eof "
        "-bind 192.0.2.10:40290 to Postfix on 25, stdin QUIT; server-side capture.",
        body_cert_name_mismatch,
        [session(C + "40290", SERVER25, "ok-no-mail", closed_by="server", how="FIN",
                 stage="tls-established", tls_version="TLSv1.2",
                 message_accepted="none sent (QUIT only; encrypted)",
                 certificate_names=["mx.lab.example"], notes=["certificate-name-mismatch"],
                 # control for cert-expired: the lab's normal certificate is valid
                 notes_absent=["certificate-expired"],
                 events=[{"kind": "tls-client-hello", "sni": "other.lab.example"}])],
        log_expect=(r"TLS connection established from .*TLSv1\.2", r"starttls=1.*quit=1")),
    Scenario(
        "cert-expired",
        "STARTTLS on 25 with TLS 1.2, so the server's certificate travels in clear. Postfix "
        "serves a self-signed certificate for mx.lab.example (CN and only SAN, like the "
        f"lab's normal one) whose notAfter lies {EXPIRED_DAYS_AGO} days before the capture "
        "and notBefore a year before that (the certificate is made when the lab runs). The "
        "client's SNI is mx.lab.example; it does not verify: s_client reports the expired "
        "and self-signed certificate, completes the handshake and sends QUIT inside TLS. "
        "Postfix answers 221 and closes (close_notify, FIN); s_client's own close_notify "
        "then meets the closed socket (RST). Nothing died: the verdict is ok-no-mail (the "
        "record sizes are too small for a message) and the report "
        f"carries a certificate-expired note ({EXPIRED_DAYS_AGO} days), beside the "
        "certificate-self-signed note every lab certificate gets, and no "
        "certificate-name-mismatch (the names match).",
        "openssl s_client -starttls smtp -tls1_2 -servername mx.lab.example -ign_eof "
        "-bind 192.0.2.10:40300 to Postfix on 25 with smtpd_tls_cert_file/smtpd_tls_key_file "
        "set to a certificate made with Python's cryptography at lab time (RSA 2048, "
        f"notAfter {EXPIRED_DAYS_AGO} days before the run), stdin QUIT; server-side capture.",
        body_cert_expired,
        [session(C + "40300", SERVER25, "ok-no-mail", closed_by="server", how="FIN",
                 stage="tls-established", tls_version="TLSv1.2",
                 message_accepted="none sent (QUIT only; encrypted)",
                 certificate_names=["mx.lab.example"], notes=["certificate-expired"],
                 notes_absent=["certificate-name-mismatch"],
                 events=[{"kind": "tls-client-hello", "sni": "mx.lab.example"}])],
        postfix=EXPIRED_OVERRIDES,
        log_expect=(r"TLS connection established from .*TLSv1\.2", r"starttls=1.*quit=1"),
        client_expect=(r"verify error:num=10:certificate has expired",)),
    Scenario(
        "old-tls-client",
        "STARTTLS on 25, then a ClientHello that offers TLS 1.0 only (legacy_version 0x0301, "
        "no supported_versions extension) with eight CBC suites, all with SHA-1 MACs (TLS 1.0 "
        "has no others), and the renegotiation SCSV, as old appliances and senders do. The "
        "lab's Postfix excludes SHA-1 suites (smtpd_tls_exclude_ciphers = aNULL, SHA1, as in "
        "tls-no-shared-cipher), so no suite is left for TLS 1.0: OpenSSL answers the "
        "ClientHello with a fatal handshake_failure alert (Postfix logs 'no shared cipher'), "
        "not protocol_version; s_client then closes, and so does Postfix. OpenSSL 3's "
        "default policy alone does not refuse TLS 1.0 here: with the exclusion removed, the "
        "same client negotiated TLSv1 with ECDHE-RSA-AES256-SHA, and with "
        "smtpd_tls_protocols = >=TLSv1.2 instead the server answered protocol_version (70) "
        "(both tried once when this scenario was made). The verdict is tls-handshake-alert "
        "(handshake_failure, from the server) and the report carries the note "
        "old-tls-version (the client offered at most TLS 1.0); tls-no-shared-cipher, the "
        "same alert after a TLS 1.2 ClientHello, is the control without that note.",
        "openssl s_client -starttls smtp -tls1 -cipher 'DEFAULT@SECLEVEL=0' -servername "
        "mx.lab.example -ign_eof -bind 192.0.2.10:40310 to Postfix on 25 (the lab's normal "
        "configuration), stdin QUIT; server-side capture.",
        body_old_tls_client,
        [_tls1_refused(40310, "handshake_failure", 40, closed_by="client")],
        log_expect=(r"SSL_accept error from unknown\[192\.0\.2\.10\]",
                    r"no shared cipher", r"starttls=0/1"),
        client_expect=(r"Protocol *: TLSv1\n", r"SSL alert number 40")),
    Scenario(
        "tls-protocol-version",
        "STARTTLS on 25, then the old-tls-client's ClientHello (TLS 1.0 only: legacy_version "
        "0x0301, no supported_versions extension) to a Postfix that accepts TLS 1.2 and "
        "later only (smtpd_tls_protocols = >=TLSv1.2, as hardening guides and newer "
        "distribution defaults set it). OpenSSL finds no protocol version in common and "
        "answers the ClientHello with a fatal protocol_version alert (70), before any "
        "cipher suite is looked at; s_client then closes, and so does Postfix. The verdict "
        "is tls-handshake-alert (protocol_version, from the server) with the note "
        "old-tls-version; old-tls-client (the same client against the lab's usual Postfix, "
        "which refuses the suites instead: handshake_failure) is the other half of the pair: "
        "which alert comes back tells which of the server's settings refused the client.",
        "openssl s_client -starttls smtp -tls1 -cipher 'DEFAULT@SECLEVEL=0' -servername "
        "mx.lab.example -ign_eof -bind 192.0.2.10:40340 to Postfix on 25 with "
        "smtpd_tls_protocols = >=TLSv1.2, stdin QUIT; server-side capture.",
        body_tls_protocol_version,
        [_tls1_refused(40340, "protocol_version", 70, closed_by="server")],
        postfix={"smtpd_tls_protocols": ">=TLSv1.2"},
        log_expect=(r"SSL_accept error from unknown\[192\.0\.2\.10\]",
                    r"unsupported protocol", r"starttls=0/1"),
        client_expect=(r"Protocol *: TLSv1\n", r"SSL alert number 70")),
    Scenario(
        "slow-banner-dns",
        "One ordinary message in plaintext on 25 whose greeting comes 6 s late, for the most "
        "common real reason: the server's reverse DNS lookup of the client times out. "
        "Postfix looks the client up before it greets (smtpd_peername_lookup = yes, "
        "Postfix's default, which the lab otherwise turns off), and its resolver is a DNS "
        f"server that never answers: resolv.conf names {DEAD_DNS} with options "
        f"timeout:{RESOLVER_TIMEOUT} attempts:1, and the lab router's nftables drop "
        "everything sent there on port 53, silently (no ICMP). The PTR query for "
        "10.2.0.192.in-addr.arpa leaves the server (the router's drop rule counts it) and "
        f"is never answered; after {RESOLVER_TIMEOUT} s the lookup gives up and only then "
        "does Postfix log 'connect from unknown[192.0.2.10]' (no warning line; its log "
        "stamp lies 6 s after the SYN) and send its 220. swaks waits for it, then sends its "
        "message, which is queued; QUIT, 221. Nothing died: the verdict is ok with a "
        "slow-banner note (the greeting about 6 s after the SYN-ACK). The capture holds TCP "
        "and ICMP only, as a port-25 capture would: the DNS query is not in it, so what "
        "caused the delay is known from the lab's setup, the router's counter and Postfix's "
        "log, not from the capture. plain-ok (same client, no lookup) is the control "
        "without the note.",
        "swaks plaintext (--local-port 40320) to Postfix on 25 with smtpd_peername_lookup = "
        "yes and, for this scenario only, a resolv.conf (nameserver 192.0.2.53, options "
        f"timeout:{RESOLVER_TIMEOUT} attempts:1) bind-mounted over /etc/resolv.conf in the "
        "mount namespace Postfix is started in (its daemons run without chroot); an nft "
        "rule in the router's forward chain drops DNS to 192.0.2.53 from before Postfix "
        "starts until it is stopped after the capture; server-side capture.",
        body_slow_banner_dns,
        [session(C + "40320", SERVER25, "ok", closed_by="server", how="FIN", stage="quit",
                 messages_accepted=1, banner_delay_s=RESOLVER_TIMEOUT,
                 notes=["slow-banner"], close_race=RACE)],
        postfix={"smtpd_peername_lookup": "yes"},
        resolver=DEAD_RESOLV_CONF, setup=dead_resolver,
        log_expect=(r"connect from unknown\[192\.0\.2\.10\]", r"status=sent")),
    Scenario(
        "any-bridge-dup",
        "One ordinary message in plaintext, captured with `tcpdump -i any` on a server whose "
        "interface is a port of a Linux bridge that holds its address (a host bridged for "
        "containers): every packet is captured twice, once on the bridge port and once on "
        "the bridge, the copy within microseconds. The lab checks that every TCP segment, "
        "both directions, appears on two interface indexes with the same seq, ack, flags "
        "and length within 1 ms; tshark on the committed capture (-e sll.ifindex -e "
        "tcp.seq_raw -e tcp.ack_raw -e tcp.len -e tcp.flags) shows 42 frames = 21 distinct "
        "segments, each once on ifindex 2 (srv0) and once on ifindex 3 (srv-br), the copies "
        "at most 11 µs apart. Not loss: the verdict is ok with a duplicate-packets note per "
        "direction, no retransmissions note and no tcp-retransmission events.",
        "In the server namespace srv0 becomes a port of bridge srv-br, which takes its MAC, "
        "addresses and default routes (all undone after the scenario); swaks plaintext to "
        "Postfix on 25; tcpdump -i any in the server namespace.",
        body_any_bridge_dup,
        [session(C + "40280", SERVER25, "ok", closed_by="server", how="FIN", stage="quit",
                 messages_accepted=1,
                 notes=["duplicate-packets", "duplicate-packets"],  # one per direction
                 # slow-banner: it follows slow-banner-dns in a full run, whose resolver
                 # must not outlive it
                 notes_absent=["retransmissions", "slow-banner"],
                 events_absent=["tcp-retransmission"],
                 close_race=RACE)],
        iface="any", around=server_on_bridge, capture_expect=duplicated_on_two_interfaces,
        # control for dnat-any: the copies here have the same addresses, no NAT between
        findings_absent=["nat-copy"],
        log_expect=(r"status=sent",)),
    Scenario(
        "dnat-any",
        "One ordinary message in plaintext, captured with `tcpdump -i any` on a host that "
        "forwards with DNAT, as a Docker host publishing port 25 or a NAT gateway does: the "
        f"lab's router holds the public address {PUBLIC4} and its nftables DNAT port 25 "
        f"there to Postfix at {SERVER25}. The client sends its message to "
        f"{PUBLIC4}:25. The router captures every packet twice: on its client-side "
        f"interface addressed to (or from) {PUBLIC4}, and on its server-side interface "
        f"addressed to (or from) {SRV4}, with the same client port, sequence and "
        "acknowledgement numbers (DNAT rewrites only the server's address). The lab checks "
        "that every TCP segment, both directions, appears once with each server address on "
        "two interface indexes within 1 ms. pcapsmtp sees two sessions, client to "
        f"{PUBLIC4}:25 (first: the copy arriving) and client to {SERVER25}, both ok with "
        "one message accepted; as they share the client's address, port and initial "
        "sequence number, the capture-level finding nat-copy names them as one connection "
        "seen before and after the translation (sessions 1 and 2). any-bridge-dup (every "
        "packet twice, same addresses) is the control without that finding.",
        f"In the router namespace, {PUBLIC4}/32 is added to rtr-cli and an nft rule in a "
        f"prerouting nat chain (priority -100, as Docker's DNAT) maps {PUBLIC4}:25 to "
        f"{SERVER25} (both removed after the scenario); swaks plaintext --local-port 40330 "
        f"to {PUBLIC4}:25; tcpdump -i any in the router namespace.",
        body_dnat_any,
        [session(C + "40330", f"{PUBLIC4}:25", "ok", closed_by="server", how="FIN",
                 stage="quit", messages_accepted=1,
                 notes_absent=["duplicate-packets", "retransmissions"], close_race=RACE),
         session(C + "40330", SERVER25, "ok", closed_by="server", how="FIN", stage="quit",
                 messages_accepted=1,
                 notes_absent=["duplicate-packets", "retransmissions"], close_race=RACE)],
        iface="any", capture_ns=RTR, around=dnat_public,
        capture_expect=translated_on_two_interfaces,
        findings=[{"code": "nat-copy", "sessions": [1, 2]}],
        log_expect=(r"connect from unknown\[192\.0\.2\.10\]", r"status=sent")),
    Scenario(
        "idle-before-command",
        "The client reads the 220 banner and never sends a command; Postfix gives up after "
        "smtpd_timeout (5 s): 421 4.4.2 Error: timeout exceeded, then closes.",
        "Python client reads the banner and stays silent; server-side capture.",
        body_idle_before_command,
        [session(C + "40500", SERVER25, "timeout", closed_by="server", how="FIN",
                 stage="banner", silent="client", server_waited_s=5, reply="421",
                 commands_sent=0)],
        log_expect=(r"timeout after CONNECT",)),
    Scenario(
        "idle-after-message",
        "One message accepted (250 after the body), then the client sends no QUIT; Postfix "
        "gives up after smtpd_timeout (5 s) with 421 4.4.2 Error: timeout exceeded. The "
        "message was delivered: the verdict is ok, with a note that the client went idle.",
        "Python client: EHLO, MAIL, RCPT, DATA, body, then silence; server-side capture.",
        body_idle_after_message,
        [session(C + "40510", SERVER25, "ok", closed_by="server", how="FIN",
                 stage="data-done", messages_accepted=1, silent="client",
                 server_waited_s=5, reply="421", notes=["client-idle-timeout"])],
        log_expect=(r"status=sent", r"timeout after END-OF-MESSAGE")),
    Scenario(
        "tls-close-notify-rst",
        "STARTTLS, TLS 1.3, EHLO and QUIT inside TLS; the client sends its close_notify "
        "right behind QUIT. Postfix answers 221, sends its close_notify and closes with "
        "the client's alert unread: its kernel sends RST, no FIN. Ordinary teardown.",
        "Python ssl client (OpenSSL), non-blocking unwrap right after QUIT; server-side "
        "capture.",
        body_tls_close_notify_rst,
        [session(C + "40520", SERVER25, "ok-no-mail", closed_by="server", how="RST",
                 stage="tls-established", tls_version="TLSv1.3", teardown=CN_RST,
                 notes=["reset-after-close-notify"])],
        log_expect=(r"TLS connection established.*TLSv1\.3", r"disconnect from .*quit=1")),
    Scenario(
        "tls12-close-notify-rst",
        "As tls-close-notify-rst with TLS 1.2 (the alerts are visible as alert records).",
        "Python ssl client limited to TLS 1.2, non-blocking unwrap right after QUIT; "
        "server-side capture.",
        body_tls12_close_notify_rst,
        [session(C + "40530", SERVER25, "ok-no-mail", closed_by="server", how="RST",
                 stage="tls-established", tls_version="TLSv1.2", teardown=CN_RST,
                 notes=["reset-after-close-notify"])],
        log_expect=(r"TLS connection established.*TLSv1\.2", r"disconnect from .*quit=1")),
    Scenario(
        "not-tls-on-465",
        "The client sends a plaintext EHLO to port 465, where Postfix (wrapper mode) "
        "expects a TLS ClientHello first; OpenSSL rejects the bytes as not TLS.",
        "Python client, plaintext EHLO to Postfix 465 (smtpd_tls_wrappermode=yes); "
        "server-side capture.",
        body_not_tls_on_465,
        [session(C + "40540", f"{SRV4}:465", "tls-closed-during-handshake", closed_by="server",
                 how="RST", stage="client-hello", alert="none",
                 client_bytes="not TLS (a plaintext EHLO, 25 bytes)",
                 teardown="OpenSSL read the first record header, found no TLS version "
                          "(wrong version number in Postfix's log) and Postfix closed "
                          "without an alert; the rest of the EHLO sat unread, so its "
                          "kernel sent RST")],
        log_expect=(r"SSL_accept error|wrong version number|http request",)),
]


def by_name() -> dict[str, Scenario]:
    """Scenarios keyed by name."""
    return {sc.name: sc for sc in SCENARIOS}


# ---------------------------------------------------------------------------- runner


def truth(sc: Scenario, ctx: Ctx, sessions: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """The truth file content for one capture of one scenario."""
    data: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "how": f"{sc.how} Software: {ctx.versions}.",
        "real": sc.real,
        "capture_side": side,
        "sessions": sessions,
    }
    if side != "client":  # the findings are those of the scenario's main capture
        if sc.findings:
            data["findings"] = sc.findings
        if sc.findings_absent:
            data["findings_absent"] = sc.findings_absent
    data.update(sc.extra)
    return data


def capture_side(sc: Scenario) -> str:
    """Where the scenario's main capture is taken: "server", or "router" (dnat-any)."""
    return "router" if sc.capture_ns == RTR else "server"


def check_log(sc: Scenario, log: str) -> list[str]:
    """Each expected Postfix log pattern must occur: proof the scenario really happened."""
    return [f"{sc.name}: Postfix log lacks /{pat}/" for pat in sc.log_expect
            if not re.search(pat, log)]


def check_capture(path: Path) -> list[str]:
    """A capture must exist and hold more than the pcap header."""
    if not path.exists() or path.stat().st_size <= 24:
        return [f"{path.name}: missing or empty capture"]
    return []


def rewrite_truth(out: Path, names: list[str] | None = None) -> list[Path]:
    """Rewrite truth files of existing captures from the table (after editing facts): of
    the scenarios named, or all.  A truth file's "how" names the software that made the
    capture, so an existing one is kept, not replaced by today's versions."""
    ctx = Ctx(out=out, logs=out, pf=None, versions=versions())  # type: ignore[arg-type]
    written = []
    for sc in SCENARIOS:
        if names and sc.name not in names:
            continue
        if (out / f"{sc.name}.pcap").exists():
            written.append(out / f"{sc.name}.truth.json")
            _rewrite(written[-1], truth(sc, ctx, sc.sessions, capture_side(sc)))
        if sc.two_sided and (out / f"{sc.name}.client.pcap").exists():
            written.append(out / f"{sc.name}.client.truth.json")
            _rewrite(written[-1], truth(sc, ctx, sc.client_sessions or [], "client"))
    return written


def _rewrite(path: Path, data: dict[str, Any]) -> None:
    if path.exists():
        data["how"] = json.loads(path.read_text()).get("how", data["how"])
    write_json(path, data)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Stable JSON (sorted keys off: the order is the reading order)."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def run_scenario(ctx: Ctx, sc: Scenario) -> Result:
    """Configure Postfix, capture while the body runs, write pcap(s), truth and logs."""
    server_pcap = ctx.out / f"{sc.name}.pcap"
    client_pcap = ctx.out / f"{sc.name}.client.pcap"
    specs = [(sc.capture_ns, sc.iface, server_pcap)]
    if sc.two_sided:
        specs.append((CLI, CLI_IF, client_pcap))
    with sc.setup(ctx) if sc.setup else nullcontext([]) as found:
        ctx.pf.ensure(sc.postfix, sc.resolver)
        offset = ctx.pf.log_size()
        with sc.around(ctx) if sc.around else nullcontext(), \
                captures(specs, snaplen=sc.snaplen):
            transcript = sc.body(ctx)
            leftovers = wait_quiet(CLI)
        log = ctx.pf.log_since(offset)
    (ctx.logs / f"{sc.name}.maillog").write_text(log)
    (ctx.logs / f"{sc.name}.client.log").write_text(transcript)
    files = [server_pcap]
    write_json(ctx.out / f"{sc.name}.truth.json",
               truth(sc, ctx, sc.sessions, capture_side(sc)))
    problems = check_log(sc, log) + check_capture(server_pcap) + found
    problems += [f"{sc.name}: client transcript lacks /{pat}/" for pat in sc.client_expect
                 if not re.search(pat, transcript)]
    if sc.capture_expect and not problems:
        problems += sc.capture_expect(server_pcap)
    problems += [f"{sc.name}: client socket still alive, killed: {ln}" for ln in leftovers]
    if sc.two_sided:
        write_json(ctx.out / f"{sc.name}.client.truth.json",
                   truth(sc, ctx, sc.client_sessions or [], "client"))
        problems += check_capture(client_pcap)
        files.append(client_pcap)
    return Result(sc.name, files, problems)
