"""Notes beside the verdict: certificates, old TLS, slow greetings, lossy or stalled TCP.

None of these decides a verdict; each is a fact worth a line in the report
(an expired certificate is a common reason behind a client's silent close).
Certificate dates are judged against the capture's own time, not today's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from dissectors.tls import version_name
from pcapsmtp.rules import Finding, needs, rule
from pcapsmtp.rules._common import (
    ev,
    f,
    flags,
    fmt_s,
    greeting,
    message_pairs,
    offered_top_version,
    plaintext_after_tls,
    reply_class,
    where,
    who,
)
from pcapsmtp.timeline import Session

#: A greeting later than this after the handshake is worth a note (postscreen, tarpits, DNS).
SLOW_BANNER_SECONDS = 5.0
#: Retransmissions in one direction before they are worth a note.
RETRANS_NOTE = 3


def _when(value: Any) -> float | None:
    """A certificate date as the timeline carries it (datetime, ISO text or epoch) -> epoch."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        d = value
    else:
        try:
            d = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _span(seconds: float) -> str:
    """A duration as a reader says it: an hour-old expiry is not "0 day(s)"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        n = int(seconds // size)
        if n:
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return "less than a minute"


@rule
@needs("tls-certificate")
def certificate(session: Session) -> list[Finding]:
    """Expired, not yet valid or self-signed server certificate (TLS <= 1.2, where visible)."""
    out: list[Finding] = []
    for e in session.of_kind("tls-certificate"):
        certs = f(e, "certificates", default=[]) or []
        if not certs:
            continue
        leaf = certs[0]
        name = _get(leaf, "common_name") or _get(leaf, "subject") or "the certificate"
        nb, na = _when(_get(leaf, "not_before")), _when(_get(leaf, "not_after"))
        if na is not None and na < e.time:
            out.append(Finding(
                code="certificate-expired",
                summary=f"The {who(e.direction)}'s certificate for {name} ({where(session, e)}) "
                f"had expired {_span(e.time - na)} before this capture "
                f"(notAfter {_get(leaf, 'not_after')}).",
                evidence=[ev(e, f"certificate {name}, notAfter {_get(leaf, 'not_after')}")],
                cannot_prove="whether the peer checks it (many MTAs accept any certificate)",
                next_step="renew the certificate and reload the MTA",
                severity="warning"))
        if nb is not None and nb > e.time:
            out.append(Finding(
                code="certificate-not-yet-valid",
                summary=f"The {who(e.direction)}'s certificate for {name} ({where(session, e)}) "
                f"was not valid yet at the time of this capture (notBefore "
                f"{_get(leaf, 'not_before')}): a clock is wrong, or the certificate is new.",
                evidence=[ev(e, f"certificate {name}, notBefore {_get(leaf, 'not_before')}")],
                next_step="check both hosts' clocks (NTP)",
                severity="warning"))
        mismatch = _name_mismatch(session, leaf)
        if mismatch is not None:
            sni, names = mismatch
            out.append(Finding(
                code="certificate-name-mismatch",
                summary=f"The client asked for {sni} (SNI) but the {who(e.direction)}'s "
                f"certificate ({where(session, e)}) names {', '.join(names[:4]) or 'no host'}"
                f"{' and more' if len(names) > 4 else ''}: clients that verify the name "
                "(DANE-TA, MTA-STS, mail clients on submission) refuse it.",
                evidence=[ev(e, f"certificate for {', '.join(names[:2]) or name}")],
                cannot_prove="whether this client verifies names (most MTAs delivering to MX "
                "hosts do not, unless MTA-STS or DANE says so)",
                next_step=f"add {sni} to the certificate's names, or point the MX/SNI at a "
                "name the certificate holds",
                severity="warning"))
        if _get(leaf, "self_signed"):
            out.append(Finding(
                code="certificate-self-signed",
                summary=f"The {who(e.direction)}'s certificate for {name} is self-signed "
                f"({where(session, e)}): clients that verify (DANE, MTA-STS) will refuse it.",
                evidence=[ev(e, f"self-signed certificate {name}")],
                next_step="use a certificate from a public CA, or publish a matching TLSA record",
                severity="info"))
    return out


def _name_mismatch(session: Session, leaf: Any) -> tuple[str, list[str]] | None:
    """(SNI, the certificate's names) when the client named a host (SNI) that none of
    the names covers (RFC 6125: a wildcard stands for one whole left-most label)."""
    hello = next(iter(session.of_kind("tls-client-hello")), None)
    sni = f(hello, "sni") if hello is not None else None
    if not isinstance(sni, str) or not sni:
        return None
    names = [str(n) for n in (_get(leaf, "sans") or [])]
    if not names and _get(leaf, "common_name"):
        names = [str(_get(leaf, "common_name"))]
    want = sni.lower().rstrip(".")
    label, dot, parent = want.partition(".")
    for n in names:
        n = n.lower().rstrip(".")
        if n == want or (n.startswith("*.") and label and dot and parent == n[2:]):
            return None
    return sni, names


@rule
@needs("tls-server-hello", "tls-client-hello")
def old_tls(session: Session) -> Finding | None:
    """TLS 1.1 or older negotiated (or the most the client offered)."""
    sh = next(iter(session.of_kind("tls-server-hello")), None)
    if sh is not None and isinstance(f(sh, "version"), int) and f(sh, "version") < 0x0303:
        v = version_name(f(sh, "version"))
        return Finding(
            code="old-tls-version",
            summary=f"The server chose {v} ({where(session, sh)}): deprecated (RFC 8996); "
            "peers with current policies refuse it.",
            evidence=[ev(sh, f"negotiated {v}")],
            next_step="enable TLS 1.2/1.3 on both sides",
            severity="warning")
    ch = next(iter(session.of_kind("tls-client-hello")), None)
    if ch is not None:
        top = offered_top_version(ch)
        if top is not None and top < 0x0303:
            return Finding(
                code="old-tls-version",
                summary=f"The client offered at most {version_name(top)} ({where(session, ch)}): "
                "servers that require TLS1.2 or later, or refuse the SHA-1 cipher suites "
                "older versions rely on, end the handshake.",
                evidence=[ev(ch, f"ClientHello up to {version_name(top)}")],
                next_step="update the client's TLS library or settings",
                severity="warning")
    return None


@rule
@needs("clock-step")
def clock_step(session: Session) -> Finding | None:
    """The capturing host's clock jumped inside the session (dissect shifted the later
    times so durations hold): say where and by how much, since any time the reader
    compares with a log after that frame is off by the step."""
    steps = session.clock_steps
    if not steps:
        return None
    marks = session.of_kind("clock-step")
    said = "; ".join(f"{'back' if sec < 0 else 'forward'} {abs(sec):,.3f} s at frame {fr}"
                     for fr, sec in steps[:3]) + ("; ..." if len(steps) > 3 else "")
    return Finding(
        code="clock-step",
        summary=f"The capture's timestamps jump ({said}): the capturing host's clock was "
        "stepped (NTP, a resumed VM), not the network. Times after the jump are shifted to "
        "follow on from the packet before it, so this session's durations leave the jump "
        "out; its absolute times after it differ from the file's by that much.",
        evidence=[ev(e, e.text.strip("[]")) for e in marks[:3]],
        cannot_prove="how much time really passed at the jump (counted as none)",
        next_step="keep the capturing host's clock slewed, not stepped (chrony's makestep "
        "only at boot), and compare with logs by frame rather than by time after the jump",
        severity="warning")


@rule
@needs("smtp-reply")
def slow_banner(session: Session) -> Finding | None:
    """The greeting came late: postscreen greet pause, a tarpit, or slow reverse DNS."""
    g = greeting(session)
    sa = flags(session, "tcp-syn-ack")
    if g is None or not sa:
        return None
    delay = g.time - sa[0].time
    if delay < SLOW_BANNER_SECONDS:
        return None
    return Finding(
        code="slow-banner",
        summary=f"The server's greeting came {fmt_s(delay)} after the connection was accepted "
        f"({where(session, g)}): most often the server's reverse DNS lookup of the client "
        "timing out; else a deliberate pause (postscreen's greet wait, a tarpit).",
        evidence=[ev(sa[0], "connection accepted"), ev(g, "greeting")],
        cannot_prove="whether the delay is deliberate (greet pause, tarpit) or a slow lookup",
        next_step="check the server's DNS resolution of the client and its anti-spam delays",
        severity="info")


@rule
def tcp_trouble(session: Session) -> list[Finding]:
    """Retransmissions and zero windows, per direction, from the reassembly counters."""
    st = session.stats
    if st is None:
        return []
    out: list[Finding] = []
    for d in ("C", "S"):
        ds = getattr(st, d, None)
        if ds is None:
            continue
        if ds.retransmissions >= RETRANS_NOTE:
            rt = [e for e in session.of_kind("tcp-retransmission") if e.direction == d]
            out.append(Finding(
                code="retransmissions",
                summary=f"The {who(d)} retransmitted {ds.retransmissions} segment(s) of "
                f"{ds.segments}: packet loss on the path (or at the capture point).",
                evidence=[ev(e) for e in rt[:3]],
                next_step="look for loss: interface errors, a congested link, a shaper",
                severity="info"))
        if ds.duplicates:
            out.append(Finding(
                code="duplicate-packets",
                summary=f"{ds.duplicates} {who(d)} segment(s) appear twice in the capture, "
                "the copy within 1 ms and identical (IPv4 identification included): the "
                "same packet captured again "
                "(`tcpdump -i any` on a bridge and its ports, or merged captures), counted "
                "once -- not loss.",
                next_step="capture on one interface (`-i eth0`, or the bridge) to avoid copies",
                severity="info"))
        if ds.zero_windows:
            out.append(Finding(
                code="zero-window",
                summary=f"The {who(d)} advertised a zero receive window {ds.zero_windows} "
                "time(s): it stopped reading (overloaded, or blocked on disk/filter).",
                next_step=f"check the {who(d)}'s load at that time",
                severity="warning"))
    return out


@rule
@needs("tcp-overlap")
def overlap_differs(session: Session) -> list[Finding]:
    """Resent bytes that differ from the first copy: the capture holds two versions.

    The timeline keeps the first copy, as a receiver does for bytes it already has; a
    receiver that got the second copy first read something else.  Real stacks resend
    the same bytes, so a difference means something rewrote them: a middlebox, an
    IDS-evasion test, a hand-edited capture.
    """
    out: list[Finding] = []
    for d in ("C", "S"):
        evs = [e for e in session.of_kind("tcp-overlap") if e.direction == d]
        if not evs:
            continue
        e = evs[0]
        first, second = f(e, "first"), f(e, "second")
        shown = first if first == second else f"'{first}' -> '{second}'"  # equal: masked
        out.append(Finding(
            code="overlap-differs",
            summary=f"Bytes the {who(d)} resent differ from its first copy "
            f"{len(evs)} time(s) (first {where(session, e)}: {shown}). The dialogue shown "
            "keeps the first copy; a receiver that kept the other read something else.",
            evidence=[ev(x) for x in evs[:3]],
            cannot_prove="which copy the receiver kept, or what rewrote the bytes",
            next_step="capture at the receiver too and compare the two "
            "(`pcapsmtp compare`); look for a middlebox rewriting this traffic",
            severity="warning"))
    return out


@rule
@needs("proxy-tunnel")
def through_tunnel(session: Session) -> Finding | None:
    """The client asked a proxy for a tunnel (HTTP CONNECT, SOCKS) before SMTP began.

    Its request and the proxy's answer are a preface, not an early talker and not a reply:
    this capture is of the client's leg to the proxy, and the server sees the proxy.
    """
    requests = session.of_kind("proxy-tunnel")
    if not requests:
        return None
    req = requests[0]
    answers = session.of_kind("proxy-tunnel-reply")
    protocol, target = f(req, "protocol"), f(req, "target") or "an unreadable target"
    evidence = [ev(req)]
    if answers and not f(answers[0], "granted"):
        a = answers[0]
        evidence.append(ev(a))
        return Finding(
            code="proxy-tunnel-refused",
            summary=f"The client asked a {protocol} proxy for a tunnel to {target} "
            f"({where(session, req)}); the proxy refused: `{f(a, 'status')}` "
            f"({where(session, a)}). The mail server was never reached through it.",
            evidence=evidence,
            cannot_prove="why the proxy refused (its policy, or the server unreachable from it)",
            next_step="check the proxy's log and its rules for port 25",
            severity="error")
    if answers:
        evidence.append(ev(answers[0]))
    return Finding(
        code="through-proxy-tunnel",
        summary=f"The client reached the server through a {protocol} proxy: it asked for a "
        f"tunnel to {target} ({where(session, req)})"
        + (f" and the proxy answered `{f(answers[0], 'status')}` ({where(session, answers[0])})"
           if answers else "") + ". This capture is of the leg between client and proxy; the "
        "server's log shows the proxy's address, not the client's.",
        evidence=evidence,
        severity="info")


@rule
@needs("proxy-header")
def behind_proxy(session: Session) -> Finding | None:
    """A load balancer's PROXY protocol header: the real client is another host.

    The session's client address (and any pattern across sessions by client) is then
    the proxy's; the header names the host whose log and reputation matter.
    """
    headers = session.of_kind("proxy-header")
    if not headers:
        return None
    h = headers[0]
    if f(h, "command") == "LOCAL":
        what = "a connection of the proxy's own (PROXY LOCAL: a health check)"
    elif f(h, "source"):
        what = (f"the original client is {f(h, 'source')}; this report's client address "
                "(and patterns across sessions by client) is the proxy's")
    else:
        what = "it did not say who the original client is"
    return Finding(
        code="behind-proxy",
        summary=f"The client is a proxy speaking the PROXY protocol (v{f(h, 'version')}, "
        f"{where(session, h)}): {what}.",
        evidence=[ev(h)],
        severity="info")


@rule
@needs("note")
def decrypted_capture(session: Session) -> Finding | None:
    """Plaintext SMTP both ways where TLS should have begun (dissect._resume_plaintext).

    Real TLS ends cannot do that, so the capture holds the dialogue inside TLS as some
    device decrypted it; the rules then read it as the key-log engine's decrypted SMTP.
    """
    m = plaintext_after_tls(session)
    if m is None:
        return None
    if m.fields.get("implicit_tls"):
        what = (f"On port {session.server[1]}, where TLS is due from the first byte, both "
                f"sides spoke plaintext SMTP ({where(session, m)}): this capture holds the TLS "
                "dialogue decrypted (as a TLS-inspecting device or a decrypting export writes "
                "it), or both ends use plaintext on this port; read here as the dialogue.")
    else:
        what = (f"After STARTTLS was accepted, both sides went on in plaintext SMTP "
                f"({where(session, m)}): this capture holds the TLS dialogue decrypted (as a "
                "TLS-inspecting device or a decrypting export writes it), read here as the "
                "dialogue inside TLS.")
    return Finding(
        code="decrypted-capture",
        summary=what,
        evidence=[ev(m)],
        cannot_prove="anything about the TLS handshake itself (versions, certificate): the "
        "export does not carry it",
        severity="info")


@rule
@needs("smtp-body")
def bare_lf_end_of_data(session: Session) -> list[Finding]:
    """A message ended by a "." line with a bare LF, and how the server took it.

    RFC 5321 ends the data with <CR><LF>.<CR><LF> only.  Servers that also accept
    <LF>.<LF> (or <CR><LF>.<LF>) while the next hop does not are what SMTP smuggling
    exploits (CVE-2023-51764/51765/51766): a second message hidden in the first.  The
    capture shows the bytes and the server's answer, not the intent.
    """
    out: list[Finding] = []
    answered = {id(body): reply for body, reply in message_pairs(session)}
    for e in session.of_kind("smtp-body"):
        if not e.fields.get("bare_lf_end"):
            continue
        reply = answered.get(id(e))
        if reply is None:
            taken = "no reply to it is in the capture"
        elif reply_class(reply) == 2:
            taken = (f"the server took it as the end of the data and accepted the message "
                     f"(`{reply.text}`, {where(session, reply)})")
        else:
            taken = f"the server answered `{reply.text}` ({where(session, reply)})"
        out.append(Finding(
            code="bare-lf-end-of-data",
            summary=f"The client ended a message with a '.' line that has a bare LF, not "
            f"<CR><LF>.<CR><LF> ({where(session, e)}); {taken}. Servers that disagree on "
            "this are what SMTP smuggling exploits.",
            evidence=[ev(e, "end of data with a bare LF")]
            + ([ev(reply)] if reply is not None else []),
            cannot_prove="whether the client meant to smuggle a message or only sends bare "
            "LFs (some scripts and old software do)",
            next_step="Postfix: smtpd_forbid_bare_newline = normalize (default from 3.9); "
            "other servers: reject or normalise bare LF in DATA",
            severity="warning"))
    return out


@rule
@needs("smtp-unparsed")
def plaintext_after_starttls(session: Session) -> Finding | None:
    """Plaintext pipelined behind STARTTLS, before the server's 220.

    The CVE-2011-0411 probe: a server that kept those bytes would run them as if they
    came inside TLS.  A fixed server discards them; inside TLS we cannot see which.
    """
    lines = [e for e in session.of_kind("smtp-unparsed")
             if e.fields.get("reason") == "plaintext-after-starttls"]
    if not lines:
        return None
    first = lines[0]
    shown = ", ".join(f"`{e.fields.get('preview', '')}`" for e in lines[:3])
    return Finding(
        code="plaintext-after-starttls",
        summary=f"The client sent {len(lines)} plaintext line(s) after STARTTLS, before the "
        f"server's 220 ({shown}, {where(session, first)}): the STARTTLS command-injection "
        "probe (CVE-2011-0411) that scanners send, or a client that does not wait for the "
        "220. TLS was read from the byte after them.",
        evidence=[ev(e) for e in lines[:3]],
        cannot_prove="whether the server discarded those lines or ran them inside TLS",
        next_step="if this client is not your scanner: Postfix, Exim and Sendmail discard "
        "such input since 2011; check the server's version",
        severity="info")
