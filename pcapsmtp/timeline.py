"""The session timeline: what the dissectors and the TCP layer saw, in order.

This is the boundary between parsing and judging (Zeek's analyzer/script
split): everything after this point -- rules, renderers -- reads ``Event``
objects and never touches bytes.

Event kinds (``Event.kind``) and the ``fields`` each carries:

    tcp-syn, tcp-syn-ack, tcp-fin, tcp-rst   {"repeat": bool, "offset": int}
    tcp-gap            {"offset", "length", "reason"}     bytes the capture never saw
    tcp-retransmission {"offset", "length", "original_frame"}
    tcp-overlap        {"offset", "first", "second"}      differing copies (escaped text)
    icmp-too-big       {"router", "mtu", "offset", "ip_version"}  a router's ICMP "fragmentation
                       needed" / ICMPv6 "Packet Too Big" about this connection; its direction
                       is toward the host that sent the too-big segment (the one it is
                       addressed to), "offset" the quoted segment's stream offset (or null)
    proxy-header       {"version", "command", "protocol", "source", "destination",
                        "malformed"}  a load balancer's PROXY protocol header (the
                       original client), the client's first bytes (dissectors/proxy.py)
    smtp-command       {"verb", "argument", "known", "bare_lf", "eight_bit", "truncated",
                        "segments": [[frame, offset_in_line, length], ...]}  (when >1 segment)
    smtp-reply         {"code", "enhanced", "lines", "answers", "capabilities", "malformed",
                        "segments": ...}
    smtp-body          {"size", "complete", "chunk", "last", "bare_lf_end"}
    smtp-auth-data     {"length"}                          never the content
    smtp-unparsed      {"reason", "preview"}
    smtp-tls-start     {}                                  TLS begins here in this direction
    tls-*              the TLS dissector's event fields (see dissectors/tls.py), "kind" as
                       the dissector names it
    note               {"what": ...}                       session-level remarks

``time`` and ``frame`` are those of the segment that completed the event (as
Wireshark attributes a reassembled PDU); ``first_frame`` is where its first
byte was, when different.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    time: float
    frame: int
    direction: str  # "C" client->server, "S" server->client, "" for neither
    kind: str
    text: str  # one display line, secrets already masked
    tls: bool = False  # travelled inside TLS (after STARTTLS, or on port 465)
    first_frame: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """One TCP connection that carries (or tried to carry) SMTP."""

    id: int
    client: tuple[str, int]
    server: tuple[str, int]
    ip_version: int
    first_time: float
    last_time: float
    first_frame: int
    last_frame: int
    packets: int = 0
    syn_seen: bool = False  # the capture holds the client's SYN (saw the start)
    client_isn: int | None = None  # the client's initial sequence number, when its SYN opened it
    implicit_tls: bool = False  # TLS from the first byte (port 465)
    events: list[Event] = field(default_factory=list)
    events_dropped: int = 0  # events beyond the per-session cap (counted, not kept)
    stats: Any = None  # reassembly.ConnectionStats
    tls: Any = None  # dissectors.tls progress object, when TLS was seen
    open_at_end: bool = False  # still open when the capture ended
    # Steps of the capturing host's clock inside this session, as (frame, seconds): a
    # packet stamped more than a second before the one before it (or a day after it).
    # Times from that frame on are shifted by -seconds so that durations hold (the gap at
    # the step itself counts as none); see dissect.SessionBuilder._clock_step.
    clock_steps: list[tuple[int, float]] = field(default_factory=list)
    verdict: Any = None  # rules.Finding
    notes: list[Any] = field(default_factory=list)  # rules.Finding

    # A cache, never pickled (see __getstate__): the events by kind (of_kind).
    _kind_index: dict[str, list[Event]] | None = field(
        default=None, repr=False, compare=False)
    _indexed_events: int = field(default=-1, repr=False, compare=False)
    # Another, only while the rules judge the session: their shared questions' answers
    # (rules._common.shared), set and cleared by rules.run_rules.
    _memo: dict[Any, Any] | None = field(default=None, repr=False, compare=False)

    def of_kind(self, *kinds: str) -> list[Event]:
        """Events of the given kinds, in order: the rules' main question.

        Every rule asks it several times of a finished session, so the events are
        indexed by kind once (again only if the event list changed length).
        """
        index = self._kind_index
        if index is None or self._indexed_events != len(self.events):
            index = {}
            for e in self.events:
                hits = index.get(e.kind)
                if hits is None:
                    index[e.kind] = [e]
                else:
                    hits.append(e)
            self._kind_index, self._indexed_events = index, len(self.events)
        if len(kinds) == 1:
            return list(index.get(kinds[0], ()))
        # Several kinds (FIN or RST...): mostly one of them is present, and its list is
        # the answer; a loop, not a set and a comprehension (790 -> ~300 ns a call).
        found = None
        for kind in kinds:
            hits = index.get(kind)
            if hits is not None:
                if found is not None and hits is not found:  # two present: their order
                    wanted = set(kinds)
                    return [e for e in self.events if e.kind in wanted]
                found = hits
        return [] if found is None else list(found)

    def kinds(self) -> set[str] | Any:
        """The event kinds present (a set-like view)."""
        if self._kind_index is None or self._indexed_events != len(self.events):
            self.of_kind("")
        assert self._kind_index is not None
        return self._kind_index.keys()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_kind_index", "_indexed_events", "_memo"):
            state.pop(name, None)  # the class defaults stand in: rebuilt when asked
        return state


def endpoint(addr: tuple[str, int]) -> str:
    """'192.0.2.1:25' or '[2001:db8::1]:25', as the JSON contract spells it."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
