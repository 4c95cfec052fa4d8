"""``pcapsmtp compare``: the lab's two-sided captures give the path's answer.

The pairs in samples/ were captured at both ends of one real session (see
samples/README.md): the router dropped the client's first TLS record; a PIX-like
proxy rewrote bytes; a path-MTU black hole ate the full-size segments; a router
source-NATed the client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pcapsmtp.compare import Comparison, compare_captures, render_text

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def pair(name: str) -> Comparison:
    return compare_captures(str(SAMPLES / f"{name}.client.pcap"), str(SAMPLES / f"{name}.pcap"))


def only(c: Comparison) -> tuple[dict, list[dict]]:
    assert len(c.pairs) == 1 and not c.only_client_side and not c.only_server_side
    return c.pairs[0].verdict, c.pairs[0].findings


def kinds(findings: list[dict], kind: str) -> list[dict]:
    return [f for f in findings if f["kind"] == kind]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapsmtp", "compare", *args],
                          capture_output=True, text=True, timeout=120)


def test_router_dropped_the_clients_first_tls_record() -> None:
    verdict, findings = only(pair("tls-server-silent"))
    assert verdict["code"] == "path-lost"
    lost = kinds(findings, "lost")
    assert len(lost) == 1
    assert lost[0]["direction"] == "C" and lost[0]["offset"] == 313 and lost[0]["length"] == 54
    assert lost[0]["client_frames"] == [15] and lost[0]["retransmissions"] == 6
    assert lost[0]["what"] == "first TLS record"
    assert "left the client at frame 15 (client capture)" in verdict["summary"]
    assert "never reached the server" in verdict["summary"]
    assert "server closed 5.0 s later (FIN, frame 21, server capture)" in verdict["summary"]
    assert not kinds(findings, "changed") and not kinds(findings, "reply-differs")


def test_pix_proxy_rewrites_are_shown_as_what_became_what() -> None:
    c = pair("pix-fixup")
    verdict, findings = only(c)
    assert verdict["code"] == "path-rewrite" and "PIX" in verdict["summary"]
    assert c.pairs[0].proxied  # different ports and ISNs: matched by content and time
    assert c.pairs[0].match.a.client != c.pairs[0].match.b.client
    changed = {(f["direction"], f["before"], f["after"]): f for f in kinds(findings, "changed")}
    assert set(changed) == {("C", "RCPT", "XXXX"),
                            ("S", "mx.lab.example ESMTP Postfix (lab)", "*" * 34),
                            ("S", "STARTTLS", "XXXXXXXA")}
    rcpt = changed[("C", "RCPT", "XXXX")]
    assert rcpt["boundary"]
    assert rcpt["client_frames"] == [9, 12] and rcpt["server_frames"] == [9, 12]
    ehlo = next(f for f in kinds(findings, "reply-differs") if f["what"] == "EHLO reply")
    assert ehlo["keywords_lost"] == ["STARTTLS"] and ehlo["keywords_added"] == ["XXXXXXXA"]
    assert not kinds(findings, "lost")


def test_pmtu_blackhole_loses_the_full_size_segments() -> None:
    verdict, findings = only(pair("pmtu-blackhole"))
    assert verdict["code"] == "path-pmtu-blackhole"
    lost = kinds(findings, "lost")
    assert len(lost) == 1 and lost[0]["direction"] == "C"
    assert lost[0]["segment_sizes"] == [1448] * 4 and lost[0]["length"] == 4 * 1448
    assert lost[0]["client_frames"] == [15, 16, 17, 18]
    assert "frame 15-18 (client capture)" in verdict["summary"]


@pytest.mark.parametrize("name", ["plain-ok", "starttls-ok", "tls-server-silent.client",
                                  "pix-fixup", "pmtu-blackhole", "ban-after-failure"])
def test_same_capture_on_both_sides_reports_nothing(name: str) -> None:
    path = str(SAMPLES / f"{name}.pcap")
    c = compare_captures(path, path)
    assert not c.only_client_side and not c.only_server_side
    assert c.pairs and all(p.verdict["code"] == "path-clean" for p in c.pairs)
    assert all(not p.findings for p in c.pairs)
    assert all(p.match.a.id == p.match.b.id for p in c.pairs)
    if c.clock is not None:
        assert c.clock.offset == 0.0


def _nat(src: Path, dst: Path, old: str, new: str, port_shift: int) -> None:
    """Simulate NAT by rewriting: the client's address and port become another one."""
    from scapy.all import IP, TCP, rdpcap, wrpcap

    packets = rdpcap(str(src))
    for p in packets:
        ip, tcp = p[IP], p[TCP]
        if ip.src == old:
            ip.src, tcp.sport = new, tcp.sport + port_shift
        if ip.dst == old:
            ip.dst, tcp.dport = new, tcp.dport + port_shift
        del ip.chksum, tcp.chksum
    wrpcap(str(dst), packets)


def test_real_nat_path_matches_and_reports_nothing_lost() -> None:
    """The lab's router source-NATs the client (nft snat): one session, a clean path."""
    c = pair("nat-plain")
    verdict, findings = only(c)
    assert c.pairs[0].match.a.client == ("192.0.2.10", 40220)
    assert c.pairs[0].match.b.client == ("198.51.100.1", 50220)
    assert verdict["code"] == "path-clean" and findings == []


def test_nat_rewritten_copy_still_matches(tmp_path: Path) -> None:
    natted = tmp_path / "natted.pcap"
    _nat(SAMPLES / "tls-server-silent.pcap", natted, "192.0.2.10", "203.0.113.7", 1000)
    c = compare_captures(str(SAMPLES / "tls-server-silent.client.pcap"), str(natted))
    verdict, findings = only(c)
    assert c.pairs[0].match.b.client == ("203.0.113.7", 41140)
    assert "ISN" in c.pairs[0].match.score.how
    assert verdict["code"] == "path-lost" and kinds(findings, "lost")[0]["offset"] == 313


def test_sessions_only_on_one_side_are_reported(tmp_path: Path) -> None:
    merged = tmp_path / "server-plus.pcap"
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(merged),
                    str(SAMPLES / "tls-server-silent.pcap"), str(SAMPLES / "tcp-refused.pcap")],
                   check=True)
    c = compare_captures(str(SAMPLES / "tls-server-silent.client.pcap"), str(merged))
    assert len(c.pairs) == 1 and c.pairs[0].verdict["code"] == "path-lost"
    assert not c.only_client_side
    assert [s.verdict.code for s in c.only_server_side] == ["tcp-refused"]
    text = render_text(c)
    assert "only in the server capture" in text and "only-server-side" in text


def test_other_sessions_between_the_same_hosts_do_not_match() -> None:
    # Same client, same server, same banner, EHLO and MAIL FROM; other ports, ISNs, RCPT.
    c = compare_captures(str(SAMPLES / "plain-ok.pcap"), str(SAMPLES / "reject-550.pcap"))
    assert not c.pairs
    assert [s.verdict.code for s in c.only_client_side] == ["ok"]
    assert [s.verdict.code for s in c.only_server_side] == ["smtp-rejected"]


def test_cli_text_and_json() -> None:
    args = (str(SAMPLES / "tls-server-silent.client.pcap"), str(SAMPLES / "tls-server-silent.pcap"))
    text = run(*args)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("pcapsmtp ") and "tls-server-silent.client.pcap" in text.stdout
    assert all(len(line) <= 100 for line in text.stdout.splitlines())
    assert run(*args).stdout == text.stdout  # deterministic
    doc = json.loads(run(*args, "--format", "json").stdout)
    assert doc["schema"] == "pcapsmtp-compare/1"
    assert doc["matched"][0]["verdict"]["code"] == "path-lost"
    assert doc["matched"][0]["client_side"]["verdict"] == "tls-client-silent-after-handshake"
    assert doc["matched"][0]["server_side"]["verdict"] == "tls-client-silent-after-handshake"


def test_cli_unreadable_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture\n")
    for args in ((str(bad), str(SAMPLES / "plain-ok.pcap")),
                 (str(SAMPLES / "plain-ok.pcap"), str(tmp_path / "missing.pcap"))):
        proc = run(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pcapsmtp: error: ")
