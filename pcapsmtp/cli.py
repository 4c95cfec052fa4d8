"""The command line: ``pcapsmtp analyze``, ``pcapsmtp explain``.

Errors the user can act on come out as one line on stderr with exit status 1
(2 for usage errors, click's convention); a traceback only with --debug.
"""

from __future__ import annotations

import gc
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import click

from pcapsmtp import __version__
from pcapsmtp.capture import CaptureError
from pcapsmtp.flows import DEFAULT_PORTS, Selection

FORMATS = ("text", "json", "markdown", "html")
ENGINES = ("native", "tshark")


def _fail(message: str) -> None:
    click.echo(f"pcapsmtp: error: {message}", err=True)
    sys.exit(1)


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any failure into one line on stderr (a traceback only with --debug)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False)
        try:
            return func(*args, **kwargs)
        except CaptureError as exc:
            _fail(str(exc))
        except (BrokenPipeError, KeyboardInterrupt):
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
            if debug:
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} "
                  "(run again with --debug and report it)")
    return wrapper


class _Commands(click.Group):
    """The group, with ``live`` and ``compare`` imported only when asked for: their
    modules (and what they import) cost ~45 ms of every ``analyze`` run otherwise,
    before any packet is read (measured with ``python3 -X importtime``)."""

    LAZY = {"live": "pcapsmtp.live", "compare": "pcapsmtp.compare"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.LAZY:
            import importlib

            module = importlib.import_module(self.LAZY[cmd_name])
            self.add_command(getattr(module, cmd_name))
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pcapsmtp")
def main() -> None:
    """Read packet captures of SMTP traffic and say, per session, where and why it died.

    \b
    Start with:
      pcapsmtp analyze capture.pcap          report on every SMTP session in a capture
      tcpdump -U -w - port 25 | pcapsmtp analyze -     ... while the capture runs
      pcapsmtp explain tls-client-silent-after-handshake   what a verdict means
    """


def _ports(values: tuple[str, ...]) -> set[int]:
    ports: set[int] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise click.BadParameter(f"not a TCP port: {part!r}", param_hint="--port")
            ports.add(int(part))
    return ports


def _progress() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(n: int) -> None:
        click.echo(f"\rpcapsmtp: {n:,} packets read", err=True, nl=False)
    return show


def _fail_on(ctx: click.Context, param: Any, value: str) -> str:
    """--fail-on codes, checked while parsing: a typo (smtp-rejectd) would otherwise turn
    a CI gate off silently.  One line and exit 2, as ``explain nonsense``."""
    from pcapsmtp.rules import VERDICT_CODES

    unknown = [c.strip() for c in value.split(",")
               if c.strip() and c.strip() not in (*VERDICT_CODES, "any-failure")]
    if unknown:
        click.echo(f"pcapsmtp: error: --fail-on: unknown verdict code {unknown[0]!r} "
                   "(`pcapsmtp explain` lists the codes; 'any-failure' for all but ok)",
                   err=True)
        ctx.exit(2)
    return value


def _session_ids(ctx: Any, param: Any, values: tuple[str, ...]) -> frozenset[int]:
    """--session 3,5 --session 7: checked while parsing, so a typo is a usage error."""
    ids: set[int] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and not part.isdigit():
                raise click.BadParameter(f"not a session number: {part!r}")
            if part:
                ids.add(int(part))
    return frozenset(ids)


def _endpoints(ctx: Any, param: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    """--client/--server values: an address, address:port, [v6]:port or a network."""
    from pcapsmtp.redact import check_spec

    for spec in values:
        problem = check_spec(spec)
        if problem:
            raise click.BadParameter(problem)
    return values


@main.command()
@click.argument("capture", metavar="CAPTURE")
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True,
              help="text to read and paste; json for scripts (schema pcapsmtp/1); markdown "
                   "for tickets and GitHub issues; html: one self-contained page with a "
                   "ladder diagram per session.")
@click.option("-p", "--port", "ports", multiple=True, metavar="PORT[,PORT]",
              help="Also follow these TCP ports (25, 465 and 587 always are).")
@click.option("--any-port", is_flag=True,
              help="Find SMTP on any port by its 220 greeting (slower).")
@click.option("--tls-port", "tls_ports", multiple=True, metavar="PORT[,PORT]",
              help="Ports that speak TLS from the first byte, like 465.")
@click.option("--brief", is_flag=True, help="Verdicts only, no per-session timeline.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the report to this file instead of standard output.")
@click.option("--fail-on", metavar="CODE[,CODE]", default="", callback=_fail_on,
              help="Exit with status 3 when any session gets one of these verdicts "
                   "('any-failure' for every verdict but ok and ok-no-mail).")
@click.option("--redact", is_flag=True,
              help="Replace IP addresses, host names, e-mail addresses, certificate names "
                   "and the file name by pseudonyms, in every format, so the report can go "
                   "to a public list.  The report ends with what was replaced, by count.")
@click.option("--redact-key", metavar="KEY", envvar="PCAPSMTP_REDACT_KEY",
              help="Derive pseudonyms from KEY, so they stay the same across reports "
                   "(default: a random key per run).  Implies --redact.  "
                   "Also read from $PCAPSMTP_REDACT_KEY.")
@click.option("--keep-domains", is_flag=True,
              help="Redact, but keep registrable domains (example.com, example.co.uk) so "
                   "readers see which provider is involved.  Implies --redact.")
@click.option("--session", "session_ids", multiple=True, metavar="ID[,ID]",
              callback=_session_ids,
              help="Only these sessions (numbers as in the report).")
@click.option("--failures-only", is_flag=True,
              help="Only sessions whose verdict is not ok or ok-no-mail.")
@click.option("--client", "clients", multiple=True, metavar="ADDR[:PORT]|NET",
              callback=_endpoints,
              help="Only sessions from this client address, address:port ([v6]:port) or "
                   "network (10.0.0.0/8).  Repeat for several.")
@click.option("--server", "servers", multiple=True, metavar="ADDR[:PORT]|NET",
              callback=_endpoints,
              help="Only sessions to this server (same forms as --client).")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="native (default): our own packet reader, fast.  tshark: let Wireshark "
                   "decode the packets (GRE, ERSPAN, VXLAN, MPLS and other encapsulations); "
                   "slower.  Needs tshark installed.")
@click.option("--keylog", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Decrypt STARTTLS and port-465 sessions with this key-log file "
                   "(SSLKEYLOGFILE format) and show the SMTP dialogue inside TLS.  "
                   "Implies --engine tshark.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N",
              help="Worker processes for a large capture file (default: $PCAPSMTP_JOBS, "
                   "else the CPUs, at most 4).  The report is the same with any N.")
@click.option("--debug", is_flag=True, hidden=True)
@_guarded
def analyze(capture: str, fmt: str, ports: tuple[str, ...], any_port: bool,
            tls_ports: tuple[str, ...], brief: bool, output: str | None, fail_on: str,
            redact: bool, redact_key: str | None, keep_domains: bool,
            session_ids: frozenset[int], failures_only: bool, clients: tuple[str, ...],
            servers: tuple[str, ...], engine: str | None, keylog: str | None,
            jobs: int | None, debug: bool) -> None:
    """Report on every SMTP session in CAPTURE (pcap, pcapng, gzipped; '-' reads stdin).

    For each session: who talked to whom, the dialogue as the wire saw it (plaintext
    SMTP, then TLS records after STARTTLS or on port 465), and a verdict saying where
    and why it died, with frame numbers as evidence.  Exit status: 0 analysed, 1 the
    input could not be read, 2 usage error, 3 a --fail-on verdict was found.
    """
    from pcapsmtp.analyze import collector_paused
    from pcapsmtp.redact import names_in_session, share

    if jobs:
        os.environ["PCAPSMTP_JOBS"] = str(jobs)  # read by the analysis and the renderers
    scope = _scope(session_ids, failures_only, clients, servers)
    implicit = _ports(tls_ports) | {465}
    selection = Selection(ports=frozenset(DEFAULT_PORTS | _ports(ports) | implicit),
                          implicit_tls_ports=frozenset(implicit), any_port=any_port)
    redacting = redact or bool(redact_key) or keep_domains
    render = _render_on_add(fmt, brief)
    # Redacted, no session is shown before the names of all are learnt: the analysis
    # only finds each session's names (learn=), and share() renders each once redacted.
    on_finish = None if redacting else render
    learn = names_in_session if redacting else None
    # The analysis pauses the cyclic collector (see analyze.collector_paused); so does the
    # rest of the command: resumed after the analysis, its first collection would scan
    # every stub and rendered piece still alive for nothing (the process ends soon).
    with collector_paused():
        result = _analyse(engine, keylog, capture, selection, on_finish, learn)
        searched = False
        if not result.sessions and not any_port and _rereadable(capture):
            # Nothing on the SMTP ports: look for SMTP by its greeting everywhere (a relay
            # on 2525, a tunnel through a proxy's port), and say so in the report.
            searched = True
            wider = replace(selection, any_port=True, by_greeting_fallback=True)
            again = _analyse(engine, keylog, capture, wider, on_finish, learn)
            if again.sessions:
                result = again
        if _progress():
            click.echo("\r\033[K", err=True, nl=False)
        if not result.sessions:
            where = "any port" if any_port else "ports " + ",".join(
                str(p) for p in sorted(selection.ports))
            if searched:
                where += ", nor a 220 greeting on any other port"
            problem = f"; {result.capture.problem}" if result.capture.problem else ""
            hint = "try --port PORT" if searched else "try --port or --any-port"
            _fail(f"no SMTP sessions in {capture} ({result.capture.packets:,} packets, {where}"
                  f"{problem}); {hint}")
        shared, sharing = share(result, scope, redact=redacting,
                                key=redact_key.encode() if redact_key else None,
                                keep_domains=keep_domains, render=render)
        chunks = _chunks(shared, fmt, brief, sharing)
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.writelines(chunks)
        else:
            for chunk in chunks:
                sys.stdout.write(chunk)
            sys.stdout.flush()
        status = _exit_status(result, fail_on)
        # The report is written: keep the collector, when it resumes here and at exit, from
        # scanning everything still alive (the store's stubs, the modules).  Measured on
        # the 300k-packet benchmark, '--jobs 1 --format json': that collection took 0.19 s
        # (98k objects); frozen, the process just ends.
        gc.freeze()
    sys.exit(status)


def _render_on_add(fmt: str, brief: bool) -> Any:
    """Text and JSON reports are rendered where each session is finished, instead of
    pickling every session and loading it again for the report (analyze's ``render``,
    see store.SessionStore); redacted, where each is redacted (redact.share).  None for
    markdown and html."""
    if fmt not in ("json", "text"):
        return None
    if fmt == "json":
        from pcapsmtp.render import json as json_report
        return json_report.ON_ADD
    from pcapsmtp.render import text
    return text.on_add(timelines=not brief)


def _analyse(engine: str | None, keylog: str | None, capture: str, selection: Selection,
             on_finish: Any, learn: Any) -> Any:
    """One analysis of the capture, with the progress display that fits it."""
    from pcapsmtp.analyze import analyze as run
    from pcapsmtp.progress import FileProgress

    if engine or keylog:
        return _run_engine(engine, keylog, capture, selection, on_finish, learn)
    if FileProgress.usable(capture):
        # a bar by bytes for a file on a terminal; the packet count otherwise (stdin)
        with FileProgress(capture):
            return run(capture, selection, render=on_finish, learn=learn)
    return run(capture, selection, progress=_progress(), render=on_finish, learn=learn)


def _rereadable(capture: str) -> bool:
    """A regular file can be read a second time; stdin or a FIFO cannot."""
    try:
        return capture != "-" and stat.S_ISREG(os.stat(capture).st_mode)
    except OSError:
        return False


def _run_engine(engine: str | None, keylog: str | None, capture: str,
                selection: Selection, render: Any = None, learn: Any = None) -> Any:
    """The engine the user picked: --keylog needs tshark, so it implies it."""
    from pcapsmtp.analyze import analyze as native

    if keylog and engine == "native":
        # exit 2 by hand: _guarded would turn a click.UsageError into an internal error
        click.echo("pcapsmtp: error: --keylog needs --engine tshark (the native engine "
                   "cannot decrypt)", err=True)
        sys.exit(2)
    if engine == "native":
        return native(capture, selection, progress=_progress(), render=render, learn=learn)
    from pcapsmtp import engine_tshark

    return engine_tshark.analyze(capture, selection, keylog=keylog, progress=_progress())


def _scope(session_ids: frozenset[int], failures_only: bool, clients: tuple[str, ...],
           servers: tuple[str, ...]) -> Any:
    from pcapsmtp.redact import Scope

    return Scope(sessions=session_ids, failures_only=failures_only,
                 clients=tuple(clients), servers=tuple(servers))


def _chunks(result: Any, fmt: str, brief: bool, sharing: Any = None) -> Iterator[str]:
    """The report piece by piece: written as it is made, so a big capture's report is
    never held in memory whole (sessions come one at a time from the spool)."""
    if fmt == "json":
        from pcapsmtp.render import json as json_report
        yield from json_report.chunks(result, sharing)
        return
    if fmt == "markdown":
        from pcapsmtp.render import markdown
        lines = markdown.lines(result, timelines=not brief, sharing=sharing)
    elif fmt == "html":
        from pcapsmtp.render import html
        lines = html.page(result, not brief, sharing)
    else:
        from pcapsmtp.render import text
        lines = text.lines(result, timelines=not brief, sharing=sharing)
    for line in lines:
        yield line + "\n"


def _exit_status(result: Any, fail_on: str) -> int:
    wanted = {c.strip() for c in fail_on.split(",") if c.strip()}
    if not wanted:
        return 0
    from pcapsmtp.store import verdicts

    for _, code in verdicts(result.sessions):  # without loading the sessions
        if code in wanted or ("any-failure" in wanted and code != "-"
                              and not code.startswith("ok")):
            return 3
    return 0


@main.command()
@click.argument("code", required=False)
def explain(code: str | None) -> None:
    """What a verdict CODE means, how it is detected, the log lines each side's MTA
    writes for it, and what to do.  Without CODE: every code with its one-line meaning."""
    from pcapsmtp import explain as texts

    if code is None or code not in texts.CODES:
        if code is not None:
            click.echo(f"pcapsmtp: unknown verdict code {code!r}; the codes are:", err=True)
        for c in texts.CODES:
            click.echo(texts.meaning_line(c), err=code is not None)
        sys.exit(0 if code is None else 2)
    click.echo(texts.explain(code), nl=False)


if __name__ == "__main__":
    main()
