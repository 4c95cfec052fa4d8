"""`pcapsmtp explain CODE`: what a verdict means, how it is found, and what the logs say.

The log lines are the bridge between a capture and the MTAs' own records: an
admin who sees a verdict greps both sides' logs for these.  Text only, at most
100 columns, so it can be pasted like the report.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from pcapsmtp.rules import VERDICT_CODES

WIDTH = 100


@dataclass(frozen=True)
class Explanation:
    meaning: str
    detection: str
    logs: tuple[str, ...]  # "who: line" -- typical log lines on either side
    todo: str


EXPLANATIONS: dict[str, Explanation] = {
    "ok": Explanation(
        "At least one message was accepted (a 2xx reply to its end) and the session closed in "
        "order. On an encrypted session it means: the TLS handshake completed, both sides "
        "exchanged application data and the connection closed normally -- the SMTP dialogue "
        "itself was encrypted, so acceptance cannot be seen and the summary says so.",
        "A 2xx reply to the end of DATA (or BDAT LAST), then QUIT/221 or the client's FIN; "
        "for TLS, records both ways after both Finished messages, then FIN or close_notify.",
        ("Postfix: postfix/smtpd[..]: 4XyZ: client=host[192.0.2.1]",
         "Postfix: postfix/qmgr[..]: 4XyZ: from=<a@example.org>, size=1234, nrcpt=1",
         "Exim: <= a@example.org H=host [192.0.2.1] P=esmtps ... S=1234",
         "sendmail: ... stat=Sent (... Message accepted for delivery)"),
        "Nothing on the wire failed. Follow the queue ID from the 250 reply in the server's log.",
    ),
    "ok-no-mail": Explanation(
        "The session ended in order but carried no message: a probe, an address verification "
        "callout, a client that said EHLO and QUIT, or one that gave up after RSET.",
        "QUIT answered 221 (or the client's FIN) with no message accepted, in a capture that "
        "saw the whole plaintext dialogue (SYN seen, no missing bytes).",
        ("Postfix: disconnect from host[192.0.2.1] ehlo=1 quit=1 commands=2",
         "sendmail: host [192.0.2.1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
         "Exim: SMTP connection from host [192.0.2.1] closed by QUIT"),
        "If a message was expected, ask the client side why it stopped (its log for this "
        "connection); callouts from a receiving MX look exactly like this.",
    ),
    "smtp-deferred": Explanation(
        "A 4xx reply ended the transaction: a temporary failure the client should retry later "
        "(greylisting, rate limits, a full queue, 421 service shutting down).",
        "The last failure reply to MAIL/RCPT/DATA/the greeting (or a 421 at any time) with no "
        "later success; a reply without its 3-digit code is classed by its enhanced code.",
        ("Postfix: NOQUEUE: reject: RCPT from host[192.0.2.1]: 450 4.2.0 ... Greylisted",
         "Postfix (client): status=deferred (host mx[..] said: 451 4.7.1 ...)",
         "Exim: H=host [192.0.2.1] F=<a@example.org> temporarily rejected RCPT <b@example.net>",
         "GroupWise: 450 TLS negotiation failure"),
        "Read the reply text; the server's log at that time says which check deferred it. A "
        "client that retries should get through; if it never does, it is a rejection in disguise.",
    ),
    "smtp-rejected": Explanation(
        "A 5xx reply ended the transaction: a permanent refusal (unknown user, policy, "
        "reputation, content, failed AUTH, a 554 greeting).",
        "The last failure reply to a command that matters, with no later success; losing to "
        "middlebox-rewrite and pipelining-violation when those caused the 5xx.",
        ("Postfix: NOQUEUE: reject: RCPT from host[192.0.2.1]: 550 5.1.1 <b@example.net>: "
         "Recipient address rejected",
         "Exim: H=host [192.0.2.1] F=<a@example.org> rejected RCPT <b@example.net>",
         "sendmail: ruleset=check_rcpt, arg1=<b@example.net>, reject=550 5.7.1 ...",
         "Postfix (client): status=bounced (host mx[..] said: 554 5.7.1 ...)"),
        "The reply text is the server's reason; its log says which rule. Send both the reply and "
        "the frame numbers to the server's admin.",
    ),
    "pipelining-violation": Explanation(
        "The client talked before the reply it had to wait for: before the greeting (an early "
        "talker, typical of spam bots), several commands at once without PIPELINING advertised, "
        "after a command that must end a group (EHLO, DATA, STARTTLS, AUTH...), or the server "
        "said so with a synchronisation error.",
        "Frame order: a command captured before the reply it should have awaited (true on "
        "either side of the wire), plus sync-error reply texts. A verdict only when the session "
        "then failed; otherwise a note.",
        ("Postfix: improper command pipelining after EHLO from host[192.0.2.1]",
         "Postfix postscreen: PREGREET 11 after 0.2 from [192.0.2.1]:4711: EHLO bot",
         "Exim: SMTP protocol synchronization error (input sent without waiting for greeting)",
         "Exim: SMTP protocol synchronization error (next input sent too soon: pipelining "
         "was not advertised)"),
        "Fix or replace the client's SMTP code. If the client is a real MTA, look for a proxy or "
        "SMTP-inspecting firewall that buffers and releases its commands together.",
    ),
    "starttls-refused": Explanation(
        "The client asked for STARTTLS and the server answered 4xx/5xx: TLS is not available "
        "(missing certificate or key, a TLS library error, a policy for this client).",
        "A 4xx/5xx reply to STARTTLS; a note instead of the verdict when the client went on in "
        "plaintext and delivered.",
        ("server: 454 4.7.0 TLS not available due to local problem",
         "Postfix: warning: cannot get RSA private key from file ...: disabling TLS support",
         "Postfix (client): status=deferred (TLS is required, but was not offered by host ...)",
         "sendmail: STARTTLS=server: file ... unsafe: ..."),
        "Fix the server's TLS setup (certificate/key paths and permissions) and check its log at "
        "startup and at the time of the refusal.",
    ),
    "starttls-not-followed": Explanation(
        "The server said 220 to STARTTLS but no TLS ClientHello came: the client sent "
        "plaintext, or nothing until someone closed.",
        "A 220 reply to STARTTLS with no tls-client-hello after it; what came instead is the "
        "evidence. Only a note when the capture ends right after the 220.",
        ("Postfix: lost connection after STARTTLS from host[192.0.2.1]",
         "Postfix: SSL_accept error from host[192.0.2.1]: -1",
         "sendmail: STARTTLS=server, error: accept failed=-1, reason=unknown protocol",
         "Exim: TLS error on connection from host [192.0.2.1] (SSL_accept): timed out"),
        "Look at the client's TLS log (it may fail before sending anything); capture on the "
        "client side to see whether the 220 arrived. A proxy that strips STARTTLS looks alike.",
    ),
    "middlebox-rewrite": Explanation(
        "Bytes were changed in flight, by an SMTP-inspecting firewall (Cisco PIX/ASA fixup smtp "
        "/ ESMTP inspection and look-alikes): commands masked as XXXX, EHLO keywords as "
        "XXXXXXXA (the 8-byte shadow of STARTTLS), banners as 220 *****.",
        "Masked words keep the original length; an X run across a TCP segment boundary (named "
        "by frame and byte) shows a per-segment inspector; the 500/sync error that follows is "
        "reported as its consequence, not its cause.",
        ("server: 500 5.5.1 Command unrecognized: \"XXXX TO:<b@example.net>\"",
         "Exim: SMTP protocol synchronization error (next input sent too soon)",
         "Exim: unrecognized command \"XXXX TO:<b@example.net>\"",
         "client: host mx[..] said: 220 *****0****2*****"),
        "Turn SMTP inspection off on the firewall (`no fixup protocol smtp 25`, `no inspect "
        "esmtp`) and capture on both sides of it to confirm.",
    ),
    "tls-handshake-alert": Explanation(
        "An alert ended the TLS handshake; the report names who sent it and its description "
        "(handshake_failure, protocol_version, unknown_ca, ...).",
        "A tls-alert before the handshake completed and before the other side's FIN/RST (an "
        "alert sent after the peer closed is a reaction: tls-closed-during-handshake); the "
        "offered versions and cipher suites of the ClientHello are shown.",
        ("Postfix: SSL_accept error from host[192.0.2.1]: -1 ... no shared cipher",
         "Exim: TLS error on connection from host [192.0.2.1] (SSL_accept): error:... "
         "no shared cipher",
         "sendmail: STARTTLS=server, error: accept failed=0, reason=sslv3 alert handshake failure",
         "sendmail (client): 403 4.7.0 TLS handshake failed"),
        "Compare the offered versions/suites with the other side's TLS policy; test with "
        "`openssl s_client -starttls smtp -connect host:25`.",
    ),
    "tls-closed-during-handshake": Explanation(
        "The TLS handshake stopped with a FIN or RST and no alert, at a named stage (FIN "
        "during ClientHello, after ServerHelloDone, after the client's Finished...). Also: a "
        "ClientHello on a plaintext port, a plaintext greeting where TLS was expected, or a "
        "server that gives up the handshake with a plaintext 4xx reply (Sendmail's 403, "
        "GroupWise's 450).",
        "TLS began (STARTTLS accepted or port 465) and the handshake never completed; the last "
        "handshake message and the first close name the stage and who gave up. An alert the "
        "other side sends after that close (a client answering a bare FIN with decode_error) "
        "is shown as the reaction it is.",
        ("Postfix: SSL_accept error from host[192.0.2.1]: lost connection",
         "Exim: TLS error on connection from host [192.0.2.1] (SSL_accept): "
         "the TLS connection was non-properly terminated",
         "sendmail: STARTTLS=server, error: accept failed=0, SSL_error=5, errno=0",
         "sendmail (client): 403 4.7.0 TLS handshake failed",
         "GroupWise: 450 TLS negotiation failure"),
        "The side that closed knows why: read its TLS log at that time. Offering modern "
        "versions/suites usually fixes 'FIN during ClientHello' from hardened servers.",
    ),
    "tls-client-silent-after-handshake": Explanation(
        "The TLS handshake completed, then the client sent no record (after STARTTLS it owes "
        "the EHLO); the server gave up and closed.",
        "Both Finished seen (TLS 1.3: inferred from the record order, said so), no client "
        "application record afterwards, a close (the capture may end before the other FIN); "
        "no capture gap in the client's direction -- except a 'sent-unseen' one: the client's "
        "later sequence numbers prove it sent bytes (its first record) that never reached the "
        "capture point and were never acknowledged; the summary then says the record was lost "
        "between the client and the capture point.",
        ("Exchange: 451 4.7.0 Timeout waiting for client input",
         "Postfix: timeout after STARTTLS from host[192.0.2.1]",
         "Exim: SMTP command timeout on TLS connection from host [192.0.2.1]",
         "sendmail: timeout waiting for input from host during client EHLO"),
        "Unless the summary shows bytes sent but never seen, the capture cannot tell whether "
        "the client sent its record and it was lost: capture on the client side too and "
        "compare with `pcapsmtp compare`; suspect firewalls, IPS and TLS/SMTP inspection.",
    ),
    "tls-server-silent-after-handshake": Explanation(
        "The TLS handshake completed and the client sent its first record, but the server "
        "never answered it (on port 465: the server never sent its banner).",
        "Client application records after the handshake, none from the server after the first "
        "of them (TLS 1.3 session tickets sent earlier do not count), then a close. Server "
        "records the client still retransmitted its record after (an encrypted 421 before "
        "the server's close) did not acknowledge it: they are not an answer.",
        ("Postfix (client): conversation with mx[..] timed out while receiving the initial "
         "server greeting",
         "Postfix (client): conversation with mx[..] timed out after STARTTLS",
         "Exim (client): SMTP timeout after EHLO"),
        "Capture on the server side too; check the server's log and load at that time.",
    ),
    "tcp-no-answer": Explanation(
        "The client's SYNs were never answered: no SYN-ACK, no RST. A firewall drop, a ban "
        "(fail2ban), a host that is down, or a routing problem.",
        "Only client SYNs in the session; the cross-session rule links it to an earlier failure "
        "from the same client when that looks like a ban.",
        ("fail2ban: NOTICE [postfix] Ban 203.0.113.40",
         "Postfix (client): connect to mx[198.51.100.26]:25: Connection timed out",
         "Exim (client): mx [198.51.100.26] Connection timed out"),
        "Capture on the server side: does the SYN arrive? Check `fail2ban-client status "
        "postfix` and the firewall for the client address.",
    ),
    "tcp-refused": Explanation(
        "The SYN was answered with RST: nothing listens on the port, or a filter rejects the "
        "client.",
        "A server RST and no SYN-ACK.",
        ("Postfix (client): connect to mx[198.51.100.26]:25: Connection refused",
         "Exim (client): mx [198.51.100.26] Connection refused"),
        "On the server: `ss -ltn` for the port; firewall REJECT rules for the client address.",
    ),
    "tcp-reset": Explanation(
        "A RST ended an established session before the dialogue finished; the report says who "
        "sent it and after which command or record. Also a server that closes without a "
        "greeting.",
        "The first close is a RST (not after QUIT/221 or an orderly FIN).",
        ("Postfix: lost connection after RCPT from host[192.0.2.1]",
         "Postfix (client): lost connection with mx[..] while sending RCPT TO",
         "Exim: unexpected disconnection while reading SMTP command from host [192.0.2.1]",
         "sendmail: collect: premature EOM: Connection reset by host"),
        "Check the resetting side's log; an IPS or firewall may inject RSTs on its behalf -- "
        "capture on that side to see whether it really sent it.",
    ),
    "pmtu-blackhole": Explanation(
        "Full-size segments are retransmitted and never acknowledged while small ones pass: a "
        "path MTU black hole (large packets dropped and the ICMP 'fragmentation needed' lost).",
        "Sender side: the same large segment (>= 1000 bytes) retransmitted at least twice (or "
        "several large ones resent before the session ended), and nothing from the peer after "
        "the last retransmission but its 421/timeout or close, although it answered the small "
        "segments before. Receiver side: a hole of at least two full-size segments the "
        "receiver never acknowledged (not 'acked-unseen', not snaplen), later bytes arrived, "
        "and the receiver sent nothing for >= 5 s, then gave up (421, timeout, close).",
        ("Postfix: timeout after DATA (0 bytes) from host[192.0.2.1]",
         "Postfix (client): conversation with mx[..] timed out while sending message body",
         "Exim: SMTP data timeout (message abandoned) on connection from host [192.0.2.1]"),
        "Test `ping -M do -s 1472 host` from both ends; allow ICMP type 3 code 4; clamp the MSS "
        "on tunnels and VPNs.",
    ),
    "timeout": Explanation(
        "One side went silent in plaintext SMTP and the other closed after N seconds (or said "
        "421 ... timeout). Also: connected, but no greeting ever came.",
        "The closer spoke last and waited; the silence before its close (or its 421) is long; "
        "no capture gap in the silent side's direction.",
        ("Postfix: timeout after END-OF-MESSAGE from host[192.0.2.1]",
         "Postfix: timeout after DATA from host[192.0.2.1]",
         "server: 421 4.4.2 mx.example Error: timeout exceeded",
         "Exchange: 451 4.7.0 Timeout waiting for client input",
         "sendmail: timeout waiting for input from host during server cmd read"),
        "Capture on the silent side too; its log tells whether it was waiting for something "
        "else (DNS, a content filter, a full disk).",
    ),
    "capture-incomplete": Explanation(
        "The capture itself cannot tell: packets cut by the snaplen, bytes missing, the "
        "session started before the capture or was still open at its end, or only one "
        "direction was captured.",
        "Gap events (reason snaplen or missing bytes), no SYN, open at the end, packets of one "
        "side only. The verdict only when nothing more specific can be said; otherwise a note.",
        ("tcpdump: 1234 packets dropped by kernel",
         "tcpdump: listening on eth0, ..., snapshot length 96 bytes"),
        "Capture again with `tcpdump -s 0 -w x.pcap port 25`, starting before the connection "
        "and stopping after it closes, where both directions pass.",
    ),
}

CODES: list[str] = list(VERDICT_CODES)


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)


def meaning_line(code: str) -> str:
    """'code  first sentence of its meaning', one line of at most WIDTH columns: the list
    ``pcapsmtp explain`` prints, so a reader finds the code without knowing its name."""
    pad = max(len(c) for c in CODES) + 2
    first = re.split(r"[.:;] ", " ".join(EXPLANATIONS[code].meaning.split()))[0].rstrip(".")
    line = f"{code:<{pad}}{first}"
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def explain(code: str) -> str:
    """The explanation of one verdict code; raises KeyError for an unknown code."""
    e = EXPLANATIONS[code]
    out = [code, ""]
    out += _wrap(e.meaning)
    out += ["", "How it is detected:"] + _wrap(e.detection)
    out += ["", "Typical log lines:"]
    for line in e.logs:
        out += textwrap.wrap(line, WIDTH, initial_indent="  ", subsequent_indent="      ",
                             break_on_hyphens=False)
    out += ["", "What to do:"] + _wrap(e.todo)
    return "\n".join(out) + "\n"
