"""Reports made to be shared: cut a result down to some sessions, and redact it.

Both are transformations of the :class:`~pcapsmtp.analyze.Analysis` *before* any
renderer runs, so every format -- text, JSON, Markdown, HTML -- gets the same
redacted data by construction, and no renderer needs to know about privacy.

Redaction rules (what ``--redact`` replaces, and with what):

* IPv4 and IPv6 addresses, wherever they appear: session endpoints, and inside any
  text (``[10.0.0.1]`` in an EHLO reply, ``IPv6:2001:db8::1`` address literals,
  Received-like text).  Every dotted quad and every string that parses as an IPv6
  address is replaced, loopback included: over-redacting is the safe side.
  Pseudonyms are ``ip-3f2a9c`` / ``ip6-3f2a9c``, not documentation addresses:
  192.0.2.0/24 and friends hold 768 addresses in all, too few to derive a pseudonym
  from a hash without collisions, and collisions would break stability across
  reports.  Ports are kept.
* Host names: the banner's first word, the EHLO/HELO argument, the EHLO reply's first
  word, the TLS SNI, certificate common names and SANs, and any dotted name with an
  alphabetic top-level label anywhere in the dialogue.  Pseudonym ``host-3f2a9c.example``
  (RFC 2606's reserved TLD).  Names are case-insensitive, as DNS is.
* E-mail addresses (``local@domain``): ``user-3f2a9c@<domain pseudonym>``; the domain
  gets the same pseudonym as the same name used as a host, so "the sender's domain is
  the client's EHLO name" stays visible.
* Certificate subject and issuer names: every attribute value except the country
  (``C=``) becomes ``name-3f2a9c``, so chains still link up (an issuer equal to the
  next certificate's subject) and self-signed certificates still show as such.
  Certificate serials and SHA-256 fingerprints become ``fp-3f2a9c`` (they can be
  looked up in certificate-transparency logs).
* The capture's file name: ``capture-3f2a9c.pcap`` (the path may hold a user name).
* AUTH challenges (``334`` replies) other than the usual ``Username:``/``Password:``
  prompts: a CRAM-MD5 challenge carries the server's host name in base64.

With ``keep_domains`` the registrable domain survives and only what is below it is
hidden: ``mx1.corp.example.com`` -> ``host-3f2a9c.example.com``, ``alice@example.com`` ->
``user-3f2a9c@example.com``.  The registrable domain is the last two labels, or three
when the last two are a known two-level public suffix (``co.uk``, ``com.au``, ... see
:data:`TWO_LEVEL_SUFFIXES`): a small rule, not the Public Suffix List.

Pseudonyms are ``HMAC-SHA256(key, category + original)``: the same original gives the
same pseudonym throughout a report, and across reports when the same key is given.
Without a key a random one is drawn per run.  What was replaced is counted per
category; the originals are never kept in the summary.

AUTH secrets are masked by the SMTP dissector whether or not a report is redacted,
and message bodies are only counted; neither is this module's job.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
from base64 import b64decode
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pcapsmtp.analyze import Analysis
from pcapsmtp.store import RenderOnAdd, SessionStore, SessionView, learnt, report_stub
from pcapsmtp.timeline import Event, Session

#: Two-level public suffixes under which the registrable domain has three labels.
TWO_LEVEL_SUFFIXES = frozenset(
    "co.uk org.uk ac.uk gov.uk ltd.uk plc.uk me.uk net.uk sch.uk "
    "com.au net.au org.au edu.au gov.au co.nz org.nz net.nz "
    "co.jp ne.jp or.jp ac.jp go.jp co.kr or.kr "
    "com.br net.br org.br com.cn net.cn org.cn com.tw com.hk com.sg com.my "
    "co.in net.in org.in co.za org.za com.mx com.ar com.tr com.ua co.il co.id co.th".split()
)

#: Names that say nothing about anyone: never replaced.
NOT_SECRET = frozenset({"localhost", "localhost.localdomain", "localdomain"})

#: First words of a banner or EHLO reply that are not a host name.
_NOT_A_HOST = frozenset({"esmtp", "smtp", "lmtp", "service", "ready", "hello", "ok",
                         "welcome", "mail", "server"})

#: Decoded 334 challenges that are only prompts (AUTH LOGIN), kept as they are.
_AUTH_PROMPTS = frozenset({"username:", "password:", "user name", "password", "username"})

# Display names of the categories, in the order the summary lists them.
ADDRESSES = "addresses"
HOSTS = "host names"
EMAILS = "e-mail addresses"
CERT_NAMES = "certificate names"
FINGERPRINTS = "certificate fingerprints"
FILES = "file names"
CHALLENGES = "AUTH challenges"
SINGULAR = {ADDRESSES: "address", HOSTS: "host name", EMAILS: "e-mail address",
             CERT_NAMES: "certificate name", FINGERPRINTS: "certificate fingerprint",
             FILES: "file name", CHALLENGES: "AUTH challenge"}
CATEGORIES = (ADDRESSES, HOSTS, EMAILS, CERT_NAMES, FINGERPRINTS, FILES, CHALLENGES)

_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)"
_IPV6 = r"(?:(?<=IPv6:)|(?<![\w:.]))(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}(?![\w:])"
_EMAIL = (r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+"
          r"@(?:\[[^\]\s]{1,60}\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)")
_FQDN = re.compile(r"(?<![\w.@-])(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+"
                   r"[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9](?![\w-]|\.[A-Za-z0-9])")
_REPLY_CODE = re.compile(r"^\d{3}[- ]")  # "250-mx.example": the code is not part of a name
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_DN_VALUE = re.compile(r"(?:^|(?<!\\)[,+])\s*([A-Za-z0-9.]+)=((?:\\.|[^,+\\])*)")
_FIXED = re.compile(f"(?P<email>{_EMAIL})|(?P<ip6>{_IPV6})|(?P<ip4>{_IPV4})")
_SCALARS = frozenset({int, float, bool, type(None)})  # nothing to scrub or learn in these
_SCRUBBED_MAX = 1 << 16  # strings whose scrubbed text is remembered (Redactor.scrub)


@dataclass
class Sharing:
    """What a shared report says about itself; renderers print it, never the originals.

    ``shown`` describes a cut-down report ("2 of 12 sessions: --failures-only");
    ``redacted`` counts what was replaced, per category (None: not redacted).
    """

    shown: str | None = None
    redacted: dict[str, int] | None = None

    def redaction_line(self) -> str | None:
        """'4 addresses, 3 host names, ...' -- or None when the report is not redacted."""
        if self.redacted is None:
            return None
        parts = [f"{n} {cat if n != 1 else SINGULAR.get(cat, cat)}"
                 for cat, n in self.redacted.items() if n]
        return ", ".join(parts) if parts else "nothing needed replacing"


# ---------------------------------------------------------------------------
# Cutting a report down


@dataclass
class Scope:
    """Which sessions a report shows: all of them unless a criterion is given."""

    sessions: frozenset[int] = frozenset()
    failures_only: bool = False
    clients: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()

    def active(self) -> bool:
        return bool(self.sessions or self.failures_only or self.clients or self.servers)

    def matches(self, session: Session) -> bool:
        if self.sessions and session.id not in self.sessions:
            return False
        if self.failures_only and is_success(session):
            return False
        if self.clients and not any(endpoint_matches(session.client, c) for c in self.clients):
            return False
        return not self.servers or any(endpoint_matches(session.server, s)
                                       for s in self.servers)

    def describe(self, redacted: bool = False) -> str:
        """The criteria in the CLI's words; addresses left out of a redacted report."""
        parts = []
        if self.sessions:
            parts.append("--session " + ",".join(str(i) for i in sorted(self.sessions)))
        if self.failures_only:
            parts.append("--failures-only")
        hide = "(redacted)" if redacted else None
        parts += [f"--client {hide or c}" for c in self.clients]
        parts += [f"--server {hide or s}" for s in self.servers]
        return " ".join(parts)


def is_success(session: Session) -> bool:
    """ok and ok-no-mail are the successes; everything else is worth a look."""
    code = getattr(session.verdict, "code", None) or ""
    return code in ("ok", "ok-no-mail")


def endpoint_matches(addr: tuple[str, int], spec: str) -> bool:
    """Does ``addr`` match ``spec``: an address, ``addr:port``, ``[v6]:port`` or a network?"""
    host, port = _split_spec(spec)
    if port is not None and port != addr[1]:
        return False
    try:
        ip = ipaddress.ip_address(addr[0])
        if "/" in host:
            return ip in ipaddress.ip_network(host, strict=False)
        return ip == ipaddress.ip_address(host)
    except ValueError:
        return addr[0] == host


def _split_spec(spec: str) -> tuple[str, int | None]:
    """'10.0.0.1:25' -> ('10.0.0.1', 25); '[::1]:25' -> ('::1', 25); '2001:db8::1' stays."""
    spec = spec.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", spec)
    if m:
        return m.group(1), int(m.group(2)) if m.group(2) else None
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        if port.isdigit():
            return host, int(port)
    return spec, None


def check_spec(spec: str) -> str | None:
    """Why ``spec`` is not a usable --client/--server value, or None when it is."""
    host, _ = _split_spec(spec)
    try:
        if "/" in host:
            ipaddress.ip_network(host, strict=False)
        else:
            ipaddress.ip_address(host)
    except ValueError:
        return f"not an IP address, address:port or network: {spec!r}"
    return None


def cut(result: Analysis, scope: Scope,
        redacted: bool = False) -> tuple[Analysis, str | None]:
    """The result with only the sessions ``scope`` selects, and a line saying so.

    Cross-session findings stay when they name no sessions or name a shown one.
    """
    if not scope.active():
        return result, None
    sessions = result.sessions
    if isinstance(sessions, SessionStore | SessionView):
        # Match on the in-memory stubs: the full sessions stay in the spool.
        kept: Sequence[Session] = sessions.filter(scope.matches)
        ids = set(kept.ids)
    else:
        kept = [s for s in sessions if scope.matches(s)]
        ids = {s.id for s in kept}
    findings = [f for f in result.findings
                if not getattr(f, "sessions", None) or ids & set(f.sessions)]
    out = dataclasses.replace(result, sessions=kept, findings=findings)
    shown = (f"{len(kept)} of {len(result.sessions)} sessions shown "
             f"({scope.describe(redacted)})")
    return out, shown


# ---------------------------------------------------------------------------
# Pseudonyms


def registrable(name: str) -> str:
    """The registrable domain of ``name`` by the two-or-three-labels rule above."""
    labels = name.lower().rstrip(".").split(".")
    n = 3 if len(labels) >= 3 and ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-n:])


class Pseudonyms:
    """Original -> pseudonym, per category, stable under one key; counts what it saw."""

    def __init__(self, key: bytes, keep_domains: bool = False) -> None:
        self.key = key
        self.keep_domains = keep_domains
        self.maps: dict[str, dict[str, str]] = {c: {} for c in CATEGORIES}
        self.taken: dict[str, set[str]] = {c: set() for c in CATEGORIES}

    def _digest(self, category: str, original: str) -> Iterable[str]:
        mac = hmac.new(self.key, f"{category}\0{original}".encode(), hashlib.sha256).hexdigest()
        for n in (6, 8, 12, 64):  # longer only when a shorter one collides in this report
            yield mac[:n]

    def _name(self, category: str, original: str, make: Callable[[str], str]) -> str:
        known = self.maps[category].get(original)
        if known is not None:
            return known
        for digest in self._digest(category, original):
            pseudonym = make(digest)
            if pseudonym not in self.taken[category]:
                break
        self.maps[category][original] = pseudonym
        self.taken[category].add(pseudonym)
        return pseudonym

    def address(self, text: str) -> str:
        ip = ipaddress.ip_address(text)
        prefix = "ip6-" if ip.version == 6 else "ip-"
        return self._name(ADDRESSES, ip.compressed, lambda d: prefix + d)

    def host(self, name: str) -> str:
        key = name.lower().rstrip(".")
        if key in NOT_SECRET:
            return name
        if self.keep_domains and "." in key:
            domain = registrable(key)
            if key == domain:
                return key
            return self._name(HOSTS, key, lambda d: f"host-{d}.{domain}")
        return self._name(HOSTS, key, lambda d: f"host-{d}.example")

    def email(self, address: str) -> str:
        local, _, domain = address.rpartition("@")
        if domain.startswith("["):
            new_domain = "[" + self.address(domain[1:-1].removeprefix("IPv6:")) + "]"
        else:
            new_domain = self.host(domain)
        return self._name(EMAILS, address.lower(), lambda d: f"user-{d}") + "@" + new_domain

    def value(self, category: str, original: str, prefix: str, suffix: str = "") -> str:
        return self._name(category, original.lower(), lambda d: f"{prefix}-{d}{suffix}")

    def counts(self) -> dict[str, int]:
        return {c: len(self.maps[c]) for c in CATEGORIES}


# ---------------------------------------------------------------------------
# Finding the names to learn

# What a session names, as (kind, original), for Redactor.learn.
HOST = "host"  # a host name
DN_VALUE = "dn"  # a certificate subject or issuer value: a host name or another name
CHALLENGE = "challenge"  # a 334 AUTH challenge that is not a LOGIN prompt
FINGERPRINT = "fp"  # a certificate serial or SHA-256 fingerprint
Name = tuple[str, str]

# Dotted names found in a string, by string (strings repeat across sessions: "250 2.0.0
# Ok", version banners); emptied when full, so memory stays bounded.
_DOTTED: dict[str, tuple[Name, ...]] = {}
_DOTTED_MAX = 1 << 15


def names_in_session(session: Session) -> tuple[Name, ...]:
    """What ``session`` names, each once, in the order first named.

    Pure -- no key, no pseudonyms, nothing learnt before -- so the analysis workers run
    it as each session is finished (analyze's ``learn=``, see store.SessionStore), and
    a redacted report learns the names of every session without loading any.  A
    repeat is dropped: learning a finding again changes nothing (Redactor.learn keeps
    the first maker for an original, and skips a DN value already learnt).
    """
    found: dict[Name, None] = {}
    for event in session.events:
        for name in names_in_event(event):
            found[name] = None
    return tuple(found)


def names_in_event(event: Event) -> Iterator[Name]:
    """Host names where the protocol puts them (EHLO, banner, EHLO reply, SNI,
    certificates), certificate names and fingerprints, AUTH challenges, and every dotted
    name in any string of the event."""
    f = event.fields
    kind = event.kind
    if kind == "smtp-command" and f.get("verb") in ("EHLO", "HELO", "LHLO"):
        yield from _host(_first_word(f.get("argument")))
    elif kind == "smtp-reply" and f.get("answers") in ("CONNECT", "EHLO", "HELO"):
        word = _first_word((f.get("lines") or [""])[0])
        if word and ("." in word or word.lower() not in _NOT_A_HOST):
            yield HOST, word
    elif kind == "smtp-reply" and f.get("code") == 334:
        yield from _challenges(f.get("lines") or [])
    elif kind == "tls-client-hello":
        yield from _host(f.get("sni"))
    elif kind == "proxy-tunnel" and f.get("target"):
        host = str(f["target"]).rpartition(":")[0].strip("[]")
        if host and not any(ch == ":" for ch in host) and not host.replace(".", "").isdigit():
            yield from _host(host)  # an address is scrubbed as one anyway
    elif kind == "tls-certificate":
        for cert in f.get("certificates") or []:
            yield from _certificate_names(cert)
    for text in _strings(f, event.text):
        yield from _dotted_names(text)


def _host(name: str | None) -> Iterator[Name]:
    if name:
        yield HOST, name


def _certificate_names(cert: dict[str, Any]) -> Iterator[Name]:
    cn = cert.get("common_name")
    yield from _host(cn)
    for san in cert.get("sans") or []:
        yield from _host(str(san))
    for dn in (cert.get("subject"), cert.get("issuer")):
        for attr, value in _DN_VALUE.findall(dn or ""):
            if attr.upper() != "C" and value.strip():
                yield DN_VALUE, value.strip()
    if cn:  # a CN that is no host name: a name (learnt as such unless learnt already)
        yield DN_VALUE, cn
    for key in ("serial", "sha256"):
        if cert.get(key):
            yield FINGERPRINT, str(cert[key])


def _challenges(lines: list[str]) -> Iterator[Name]:
    for line in lines:
        token = line.strip()
        if token and not _is_prompt(token):
            yield CHALLENGE, token


def _dotted_names(text: str) -> tuple[Name, ...]:
    """Every dotted name in ``text`` (a reply code's "250-" is not part of one)."""
    if "." not in text:  # every dotted name has one: most strings are done here
        return ()
    found = _DOTTED.get(text)
    if found is None:
        found = tuple((HOST, m.group(0)) for m in _FQDN.finditer(_REPLY_CODE.sub("", text)))
        if len(_DOTTED) >= _DOTTED_MAX:
            _DOTTED.clear()
        _DOTTED[text] = found
    return found


# ---------------------------------------------------------------------------
# The redactor


class Redactor:
    """Walks an Analysis and replaces every address and name (see the module docstring).

    Two passes: :meth:`learn` learns the names from where the protocol puts them (and
    dotted names anywhere in the dialogue: :func:`names_in_session`, which the analysis
    workers run), then :meth:`scrub` replaces, in one regex pass per string, e-mail and
    IP addresses by pattern and learnt names as literals -- so a name quoted by a rule's
    summary is replaced too.
    """

    def __init__(self, key: bytes | None = None, keep_domains: bool = False) -> None:
        self.names = Pseudonyms(key if key is not None else secrets.token_bytes(32),
                                keep_domains)
        self.literals: dict[str, Callable[[], str]] = {}
        self._pattern: re.Pattern[str] | None = None
        self._scrubbed: dict[str, str] = {}  # scrub's results, for the pattern compiled

    # -- entry point -------------------------------------------------------

    def redact(self, result: Analysis, render: RenderOnAdd | None = None) -> Analysis:
        """A redacted copy of ``result``; the original is left as it was.

        A store's (or a view's) sessions are each loaded and redacted once, in order,
        into a store of their own, whose spool keeps memory flat as the analysis's
        does: ``render`` as analyze's, so the renderers read it as they read an
        unredacted store.  The counts are then complete when this returns.
        """
        sessions = result.sessions
        self._learn_from(sessions)
        self._learn_file(result.capture.file)
        self._compile()
        out = copy.copy(result)
        out.capture = copy.deepcopy(result.capture)
        out.findings = copy.deepcopy(result.findings)
        # Pseudonyms are handed out in order of first use (of two that collide, the later
        # gets a longer digest), so the order of what is scrubbed is part of the report:
        # a store's sessions after the capture and findings, a list's before.
        if isinstance(sessions, SessionStore | SessionView):
            self._apply(out, sessions=False)
            out.sessions = self._redacted_store(sessions, render)
        else:
            out.sessions = [self._redacted(copy.deepcopy(s)) for s in sessions]
            self._apply(out, sessions=False)
        return out

    def _learn_from(self, sessions: Sequence[Session]) -> None:
        """The names of every session, in order: as the analysis found them where it
        ran with ``learn=names_in_session``, else from the sessions (loading each)."""
        found: Iterable[Iterable[Name]] | None = learnt(sessions, names_in_session)
        if found is None:
            found = map(names_in_session, sessions)
        for names in found:
            self.learn(names)

    def _redacted_store(self, sessions: Sequence[Session],
                        render: RenderOnAdd | None) -> SessionStore:
        """Each session redacted once, in order, and stored (rendered by ``render``).

        One pass gives the counts the JSON report prints before the sessions and every
        renderer reads; redacting lazily as loaded redacted each session once for the
        counts and again for each pass of a renderer (text and Markdown: two).
        """
        out = SessionStore(render=render, stub=report_stub)
        for session in sessions:
            out.add(self._redacted(session))
        out.seal()
        return out

    def _redacted(self, session: Session) -> Session:
        self._apply_session(session)
        return session

    def summary(self) -> dict[str, int]:
        return self.names.counts()

    # -- pass 1: learning names ---------------------------------------------

    def learn(self, names: Iterable[Name]) -> None:
        """Learn what :func:`names_in_session` found, in its order.

        The order matters where two findings compete for one original (the first wins:
        a certificate's organisation that is also an EHLO name keeps the pseudonym of
        whichever came first), so findings are learnt session by session, in order.
        """
        for kind, value in names:
            if kind == HOST:
                self.learn_host(value)
            elif kind == DN_VALUE:
                self._learn_dn_value(value)
            elif kind == CHALLENGE:
                self._learn(value, lambda t=value: self.names.value(CHALLENGES, t, "challenge"))
            else:
                self._learn(value, lambda v=value: self.names.value(FINGERPRINTS, v, "fp"))

    def _learn(self, original: str, make: Callable[[], str]) -> None:
        if original and original.lower() not in NOT_SECRET:
            self.literals.setdefault(original.lower(), make)

    def learn_host(self, name: str | None) -> None:
        """A host name from a structured field (EHLO argument, SNI, SAN, ...)."""
        if not name:
            return
        name = name.strip().rstrip(".")
        if name.startswith("*."):  # wildcard SAN: "*." + the pseudonym of the name under it
            bare = name[2:]
            self._learn(name, lambda n=bare: "*." + self.names.host(n))
            name = bare
        if name.startswith("[") or _is_ip(name) or "@" in name:
            return  # address literals and e-mail SANs are matched by pattern
        if all(_LABEL.match(label) for label in name.split(".")) and len(name) >= 2:
            self._learn(name, lambda n=name: self.names.host(n))

    def collect_session(self, session: Session) -> None:
        self.learn(names_in_session(session))

    def collect_event(self, event: Event) -> None:
        self.learn(names_in_event(event))

    def _learn_dn_value(self, value: str) -> None:
        if value.lower() in self.literals:
            return  # a host name learnt already: keep its host pseudonym
        if _FQDN.fullmatch(value) or value.startswith("*."):
            self.learn_host(value)
        else:
            self._learn(value, lambda v=value: self.names.value(CERT_NAMES, v, "name"))

    def _learn_file(self, path: str) -> None:
        if not path or path == "-":
            return
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        ext = base[base.find("."):] if "." in base else ""

        def make(p: str = path) -> str:
            return self.names.value(FILES, p, "capture", ext)
        self._learn(path, make)
        if base != path:
            self._learn(base, make)

    # -- pass 2: replacing ---------------------------------------------------

    def _compile(self) -> None:
        names = sorted(self.literals, key=len, reverse=True)
        alt = "|".join(re.escape(n) for n in names)
        # A name may follow a reply code's hyphen ("250-mx.example"), not other hyphens.
        start = r"(?:(?<![\w.@-])|(?<=\b\d\d\d-))"
        lit = f"|(?P<lit>{start}(?:{alt})(?![\\w-]|\\.[A-Za-z0-9]))" if names else ""
        self._pattern = re.compile(_FIXED.pattern + lit, re.IGNORECASE)
        self._scrubbed.clear()

    def _replace(self, m: re.Match[str]) -> str:
        text = m.group(0)
        try:
            if m.group("email"):
                return self.names.email(text)
            if m.group("ip4"):
                return self._ipv4(text)
            if m.group("ip6"):
                return self.names.address(text) if _is_ip(text) else text
        except ValueError:
            return text
        make = self.literals.get(text.lower())
        return make() if make else text

    def _ipv4(self, text: str) -> str:
        """Dotted quads with leading zeros ("10.000.000.01") are addresses too."""
        octets = [int(p) for p in text.split(".")]
        if any(o > 255 for o in octets):
            return text
        return self.names.address(".".join(str(o) for o in octets))

    def scrub(self, text: str) -> str:
        """``text`` with every address and learnt name replaced.

        Remembered per string: a report repeats most of its strings ("STARTTLS", "250
        2.0.0 Ok", the server's name; 3,356 distinct of 162,208 scrubbed on the
        100k-packet benchmark), and scrubbing one again gives the same text and hands
        out no new pseudonym (every original in it got its pseudonym the first time).
        """
        done = self._scrubbed.get(text)
        if done is not None:
            return done
        if not text or self._pattern is None:
            return text
        done = self._pattern.sub(self._replace, text)
        if len(self._scrubbed) >= _SCRUBBED_MAX:
            self._scrubbed.clear()
        self._scrubbed[text] = done
        return done

    def scrub_value(self, value: Any) -> Any:
        """Strings in any JSON-like value (dicts, lists), recursively."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._scrub_item(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub_item(v) for v in value)
        return value

    def _scrub_item(self, value: Any) -> Any:
        """scrub_value of a container's item, without a call for the usual ones (numbers,
        flags, strings): most of an event's fields."""
        t = type(value)
        if t is str:
            return self.scrub(value)
        return value if t in _SCALARS else self.scrub_value(value)

    def _apply(self, result: Analysis, sessions: bool = True) -> None:
        info = result.capture
        info.file = self.scrub(info.file)
        if info.problem:
            info.problem = self.scrub(info.problem)
        if sessions:
            for session in result.sessions:
                self._apply_session(session)
        for finding in result.findings:
            self.scrub_finding(finding)

    def _apply_session(self, session: Session) -> None:
        session.client = (self.names.address(session.client[0]), session.client[1])
        session.server = (self.names.address(session.server[0]), session.server[1])
        for event in session.events:
            event.text = self.scrub(event.text)
            event.fields = self.scrub_value(event.fields)
        for finding in [session.verdict, *session.notes]:
            if finding is not None:
                self.scrub_finding(finding)

    def scrub_finding(self, finding: Any) -> None:
        """Every free-text field of a Finding and its Evidence; codes stay as they are."""
        for name in ("summary", "cannot_prove", "next_step"):
            if isinstance(getattr(finding, name, None), str):
                setattr(finding, name, self.scrub(getattr(finding, name)))
        for ev in getattr(finding, "evidence", None) or []:
            if isinstance(getattr(ev, "what", None), str):
                ev.what = self.scrub(ev.what)


def share(result: Analysis, scope: Scope | None = None, redact: bool = False,
          key: bytes | None = None, keep_domains: bool = False,
          render: RenderOnAdd | None = None) -> tuple[Analysis, Sharing]:
    """Cut, then redact: what the CLI runs before any renderer.

    The cut is made on the original addresses (what the user typed); a redacted
    report then does not repeat the addresses among the criteria.  ``render``: see
    :meth:`Redactor.redact` (the renderer's on-add function, for a redacted store).
    """
    result, shown = cut(result, scope or Scope(), redacted=redact)
    sharing = Sharing(shown=shown)
    if redact:
        redactor = Redactor(key, keep_domains)
        result = redactor.redact(result, render)
        sharing.redacted = redactor.summary()
    return result, sharing


# ---------------------------------------------------------------------------
# helpers


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _first_word(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    words = text.split()
    return words[0] if words else ""


def _is_prompt(token: str) -> bool:
    """A 334 line that decodes to a plain LOGIN prompt (nothing to hide)."""
    try:
        decoded = b64decode(token, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return False
    return decoded.strip().lower() in _AUTH_PROMPTS


def _strings(value: Any, *extra: str) -> list[str]:
    """``extra``, then every string inside a JSON-like value, in order."""
    out = list(extra)
    _add_strings(value, out)
    return out


def _add_strings(value: Any, out: list[str]) -> None:
    """(A list, not nested generators: an event's fields are mostly numbers and flags,
    each of which cost a generator before.)"""
    if isinstance(value, str):
        out.append(value)
        return
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return
    for v in value:
        t = type(v)
        if t is str:
            out.append(v)
        elif t not in _SCALARS:
            _add_strings(v, out)


__all__ = ["Redactor", "Pseudonyms", "Scope", "Sharing", "cut", "share", "registrable",
           "endpoint_matches", "check_spec", "is_success", "names_in_session"]
