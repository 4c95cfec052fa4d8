"""Patterns across sessions: bans after a failure, retry storms, differing EHLO answers.

Each pattern is reported once for the capture, naming the sessions it links;
these rules read verdicts, so they run after every session was diagnosed.
"""

from __future__ import annotations

from collections import defaultdict

from pcapsmtp.rules import Evidence, Finding, capture_rule
from pcapsmtp.rules._common import shared
from pcapsmtp.timeline import Session, endpoint

GOOD = {"ok", "ok-no-mail"}
UNANSWERED = {"tcp-no-answer", "tcp-refused"}
#: This many failed sessions between the same hosts within STORM_WINDOW is a storm.
STORM_COUNT = 5
STORM_WINDOW = 600.0
#: The two captures of one connection through a NAT start this close together (the
#: forwarding host's delay, microseconds; a second leaves room for a loaded host).
NAT_COPY_WITHIN = 1.0


def _code(s: Session) -> str:
    return s.verdict.code if s.verdict is not None else ""


def client_host(s: Session) -> str:
    """The client as the patterns count it: behind a load balancer speaking the PROXY
    protocol, the original client it names, not the balancer (every session's address)."""
    for e in s.events:
        if e.kind == "proxy-header":
            source = e.fields.get("source")
            if isinstance(source, str) and source:
                return source.rsplit(":", 1)[0].strip("[]")
            break
    return s.client[0]


@shared
def nat_copies(sessions: list[Session]) -> list[tuple[Session, Session]]:
    """(session, the same connection seen again after a NAT) for every connection the
    capture holds twice.  ``tcpdump -i any`` on a host that forwards with DNAT (Docker's
    published ports, a NAT gateway) records each packet on the way in, addressed to the
    host, and on the way out, addressed to the real server: two sessions.  They share the
    client's address, port and initial sequence number (DNAT rewrites neither) and the
    server's port, and start together; only a SYN seen proves the ISN, so sessions
    without one are never paired."""
    by: dict[tuple[tuple[str, int], int, int], list[Session]] = defaultdict(list)
    for s in sessions:
        if s.client_isn is not None:
            by[(s.client, s.client_isn, s.server[1])].append(s)
    pairs = []
    for group in by.values():
        group.sort(key=lambda s: (s.first_time, s.id))
        for first, again in zip(group, group[1:], strict=False):
            if again.server[0] != first.server[0] \
                    and again.first_time - first.first_time <= NAT_COPY_WITHIN:
                pairs.append((first, again))
    return pairs


@shared
def _pairs(sessions: list[Session]) -> dict[tuple[str, str], list[Session]]:
    copies = {again.id for _, again in nat_copies(sessions)}  # one connection counts once
    by: dict[tuple[str, str], list[Session]] = defaultdict(list)
    for s in sessions:
        if s.id not in copies:
            by[(client_host(s), s.server[0])].append(s)
    for group in by.values():
        group.sort(key=lambda s: (s.first_time, s.id))
    return by


@capture_rule
def ban_after_failure(sessions: list[Session]) -> list[Finding]:
    """A failed session, then the same client's SYNs unanswered or refused: a ban (fail2ban)."""
    out = []
    for (client, server), group in _pairs(sessions).items():
        fail = next((s for s in group if _code(s) not in GOOD | UNANSWERED), None)
        if fail is None:
            continue
        later = [s for s in group if s.first_time > fail.first_time and _code(s) in UNANSWERED]
        if not later:
            continue
        gap = later[0].first_time - fail.last_time
        out.append(Finding(
            code="ban-after-failure",
            summary=f"Session {fail.id} from {client} failed ({_code(fail)}); afterwards "
            f"{len(later)} connection attempt(s) from the same client to {server} got no "
            f"answer or a refusal (sessions {', '.join(str(s.id) for s in later[:10])}), the "
            f"first {gap:.1f} s later: the pattern of a ban (fail2ban, a firewall rate limit).",
            evidence=[Evidence(fail.first_frame, fail.first_time,
                               f"session {fail.id}: {_code(fail)}")]
            + [Evidence(s.first_frame, s.first_time, f"session {s.id}: {_code(s)}")
               for s in later[:5]],
            cannot_prove="that a ban caused it: the capture shows the order, not the server's "
            "firewall rules",
            next_step=f"on the server: `fail2ban-client status` and grep its log for "
            f"'Ban {client}'; fix the first failure, then unban",
            severity="error",
            sessions=[fail.id] + [s.id for s in later],
        ))
    return out


@capture_rule
def retry_storm(sessions: list[Session]) -> list[Finding]:
    """Many failed sessions between the same two hosts in a short time: reported once."""
    out = []
    for (client, server), group in _pairs(sessions).items():
        failed = [s for s in group if _code(s) not in GOOD]
        for i in range(len(failed)):
            window = [s for s in failed[i:] if s.first_time - failed[i].first_time
                      <= STORM_WINDOW]
            if len(window) >= STORM_COUNT:
                codes = sorted({_code(s) for s in window})
                span = window[-1].first_time - window[0].first_time
                out.append(Finding(
                    code="retry-storm",
                    summary=f"{len(window)} failed sessions from {client} to {server} within "
                    f"{span:.0f} s (sessions {', '.join(str(s.id) for s in window[:12])}; "
                    f"verdicts: {', '.join(codes)}).",
                    evidence=[Evidence(s.first_frame, s.first_time,
                                       f"session {s.id}: {_code(s)}") for s in window[:6]],
                    cannot_prove="why the client retries so fast (its retry schedule or several "
                    "queued messages)",
                    next_step="fix the first failure; check the client's retry settings",
                    severity="warning",
                    sessions=[s.id for s in window],
                ))
                break
    return out


def _caps(s: Session) -> frozenset[str] | None:
    for e in s.events:
        if (e.kind == "smtp-reply" and str(e.fields.get("answers") or "").upper() == "EHLO"
                and isinstance(e.fields.get("code"), int) and e.fields["code"] // 100 == 2):
            return frozenset(str(c).split()[0].upper() for c in e.fields.get("capabilities") or []
                             if str(c).split())
    return None


@capture_rule
def ehlo_differs(sessions: list[Session]) -> list[Finding]:
    """Different EHLO keyword sets from one server: a proxy or load balancer in the path."""
    by: dict[tuple[str, int], list[tuple[Session, frozenset[str]]]] = defaultdict(list)
    for s in sessions:
        c = _caps(s)
        if c is not None:
            by[s.server].append((s, c))
    out = []
    for server, seen in by.items():
        variants: dict[frozenset[str], list[Session]] = defaultdict(list)
        for s, c in seen:
            variants[c].append(s)
        if len(variants) < 2:
            continue
        parts = []
        for caps, ss in variants.items():
            parts.append(f"sessions {', '.join(str(s.id) for s in ss[:6])}: "
                         f"{' '.join(sorted(caps)) or '(none)'}")
        out.append(Finding(
            code="ehlo-differs",
            summary=f"{endpoint(server)} answered EHLO with different keywords in different "
            f"sessions ({'; '.join(parts)}): a proxy, load balancer or inspecting firewall "
            "answers for some connections.",
            evidence=[Evidence(ss[0].first_frame, ss[0].first_time,
                               f"session {ss[0].id}: {' '.join(sorted(caps))}")
                      for caps, ss in variants.items()],
            cannot_prove="which device answered: per-client policies (e.g. STARTTLS offered "
            "only to some) look the same",
            next_step="compare the greetings/EHLO host names; trace the path to the server",
            severity="info",
            sessions=sorted({s.id for ss in variants.values() for s in ss}),
        ))
    return out


@capture_rule
def nat_copy(sessions: list[Session]) -> list[Finding]:
    """One connection captured twice, before and after a NAT: reported once for the
    capture, so that nobody reads two failures (or two messages) where there was one."""
    pairs = nat_copies(sessions)
    if not pairs:
        return []
    first, again = pairs[0]
    listed = "; ".join(f"{a.id} and {b.id}" for a, b in pairs[:12])
    more = f" and {len(pairs) - 12} more" if len(pairs) > 12 else ""
    differ = [(a, b) for a, b in pairs if _code(a) != _code(b)]
    changed = ""
    if differ:  # the host changed the traffic between its interfaces: worth a look
        changed = (" The verdicts differ for " + ", ".join(
            f"{a.id} ({_code(a)}) and {b.id} ({_code(b)})" for a, b in differ[:4])
            + ": the forwarding host dropped or changed packets between its interfaces.")
    return [Finding(
        code="nat-copy",
        summary=f"{len(pairs)} connection(s) appear twice, before and after address "
        f"translation (sessions {listed}{more}): e.g. {endpoint(first.client)} to "
        f"{endpoint(first.server)} (seen first: as the client sent it) is the same "
        f"connection as to {endpoint(again.server)} (after the translation): same client "
        "port and initial sequence number. That is what `tcpdump -i any` records on a host "
        "that forwards with DNAT (Docker's published ports, a NAT gateway); each such "
        "session is shown twice, and the ban and retry patterns count it once."
        f"{changed}",
        evidence=[Evidence(a.first_frame, a.first_time, f"session {a.id}: {_code(a)}")
                  for a, _ in pairs[:3]]
        + [Evidence(b.first_frame, b.first_time, f"session {b.id}: {_code(b)}")
           for _, b in pairs[:3]],
        cannot_prove="whether one capture on two interfaces or two captures merged; and "
        "the verdict counts above include both copies",
        next_step="read either copy; capture on one interface (`tcpdump -i eth0`) to see "
        "each connection once",
        severity="info",
        sessions=sorted({s.id for pair in pairs for s in pair}),
    )]
