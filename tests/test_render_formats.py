"""Markdown and HTML reports: tables that render, a page that draws, nothing fetched.

The HTML is checked twice: its structure with the standard library's parser, and in
real headless Chromium (Debian's ``chromium``), which loads the page, reports what it
laid out (a script the *test* adds to a copy of the page) and takes a screenshot whose
pixels must show the diagrams' colours.  Chromium tests skip when it is not installed.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.utils import wrpcap

from pcapsmtp.cli import main
from pcapsmtp.render.html import X_CLIENT, X_SERVER
from tests.craft_session import Conversation
from tests.test_redact import SAMPLES, build_capture

HOSTILE = b"220 evil|host <b>bold</b> `tick` *star* _u_ ESMTP\r\n"


def _hostile_with_gap(c: Conversation) -> None:
    """Markup in a banner, a client segment the capture lost, then a 30 s silence."""
    c.handshake()
    c.server_sends(HOSTILE)
    c.client_sends(b"EHLO pc\r\n")
    c.server_sends(b"250 ok\r\n")
    c.client_sends(b"MAIL FROM:<a@b.example>\r\n")
    c.server_sends(b"250 2.1.0 Sender <a@b.example> OK, and a reply text far longer than the "
                   b"space between the two lines of a ladder diagram can hold\r\n")
    lost = c.client_sends(b"RCPT TO:<c@d.example>\r\n")[0]
    c.client_sends(b"DATA\r\n")
    c.server_sends(b"250 ok\r\n")
    c.server_sends(b"421 4.4.2 timeout\r\n", step=30.0)
    c.close(client_first=False)
    c.packets.remove(lost)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The redaction test's four sessions plus a fifth with markup, a gap and an idle."""
    tmp = tmp_path_factory.mktemp("formats")
    base = build_capture(tmp, "base.pcap")
    from scapy.utils import rdpcap

    c = Conversation(client="192.0.2.50", server="192.0.2.60", cport=41005,
                     time=1_700_000_400.0)
    _hostile_with_gap(c)
    packets = list(rdpcap(str(base))) + c.packets
    path = tmp / "five.pcap"
    wrpcap(str(path), sorted(packets, key=lambda p: float(p.time)))
    return path


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["analyze", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------------------
# Markdown


def gfm_tables(md: str) -> list[list[list[str]]]:
    """Pipe tables as lists of rows of cells, splitting on unescaped pipes only."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_summary_table_is_well_formed(capture: Path) -> None:
    md = run_cli(str(capture), "-f", "markdown")
    (table,) = gfm_tables(md)
    head, delim, *rows = table
    assert head[:3] == ["#", "client", "server"]
    assert all(re.fullmatch(r"-+:?|:?-+", c) for c in delim)
    assert len(rows) == 5
    assert {len(r) for r in table} == {len(head)}  # a '|' in a cell would add a column
    assert "`smtp-rejected`" in rows[1][-1]


def test_markdown_renders_tables_and_keeps_wire_text_literal(capture: Path) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    md = run_cli(str(capture), "-f", "markdown")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    assert html.count("<table>") == 1
    assert len(re.findall(r"<tr>", html)) == 6  # header + 5 sessions
    assert "<b>bold</b>" not in html  # the banner's markup is shown, not obeyed
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert len(re.findall(r"<h2>Session \d", html)) == 5
    assert html.count("<pre><code") == 5  # one timeline per session
    # angle-bracketed addresses in prose stay text, not autolinks or tags
    assert "mailto:" not in html


def test_markdown_timeline_fence_cannot_be_closed_by_wire_text(capture: Path) -> None:
    md = run_cli(str(capture), "-f", "markdown", "--session", "5")
    fences = re.findall(r"^(`{3,})text$", md, re.M)
    assert fences and all(md.count("\n" + f + "\n") >= 1 for f in fences)
    assert "`tick`" in md  # inside the fenced timeline, verbatim


def test_markdown_redacted_section(capture: Path) -> None:
    md = run_cli(str(capture), "-f", "markdown", "--redact")
    assert "## Redacted" in md
    assert re.search(r"\n\d+ addresses, \d+ host names", md)


# ---------------------------------------------------------------------------
# HTML structure


class Page(HTMLParser):
    """Collects elements as (tag, attrs) and the text, for structural assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.svg_depth = 0
        self.per_svg: list[list[tuple[str, dict[str, str]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "svg":
            self.per_svg.append([])
        elif self.per_svg:
            self.per_svg[-1].append((tag, a))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def classed(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and cls in a.get("class", "").split()]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_html_one_ladder_per_session_with_every_event(capture: Path) -> None:
    html = run_cli(str(capture), "-f", "html")
    page = parse(html)
    svgs = page.classed("svg", "ladder")
    assert [s["data-session"] for s in svgs] == ["1", "2", "3", "4", "5"]
    json_out = run_cli(str(capture), "-f", "json")
    import json

    sessions = json.loads(json_out)["sessions"]
    for svg_elems, s in zip(page.per_svg, sessions, strict=True):
        events = [a for t, a in svg_elems if t == "g" and "event" in a.get("class", "")]
        assert len(events) == _rows(s["events"])
        deaths = [a for t, a in svg_elems if t == "g" and "death" in a.get("class", "")]
        assert len(deaths) == 1
        assert deaths[0]["data-verdict"] == s["verdict"]["code"]
        last_evidence = max(e["frame"] for e in s["verdict"]["evidence"] if e["frame"])
        assert deaths[0]["data-frame"] == str(last_evidence)


def _rows(events: list[dict]) -> int:
    """Drawn rows: a run of retransmissions in one direction is one row."""
    rows, prev = 0, None
    for e in events:
        run = e["kind"] == "tcp-retransmission"
        if not (run and prev is not None and prev["kind"] == "tcp-retransmission"
                and prev["dir"] == e["dir"]):
            rows += 1
        prev = e
    return rows


def test_html_marks_tls_gaps_and_idle(capture: Path) -> None:
    page = parse(run_cli(str(capture), "-f", "html"))
    tls = [a for a in page.classed("g", "tls") if a.get("data-kind", "").startswith("tls-")]
    assert any(a["data-kind"] == "tls-certificate" for a in tls)
    assert page.classed("g", "gap"), "the lost RCPT segment is drawn"
    idles = page.classed("g", "idle")
    broken = [a for a in idles if "broken" in a["class"]]
    assert broken and all(float(a["data-seconds"]) >= 30 for a in broken)
    text = "".join(page.text)
    assert re.search(r"\d+\.\d s idle \(not to scale\)", text)


def test_html_is_self_contained_and_escapes_wire_text(capture: Path) -> None:
    html = run_cli(str(capture), "-f", "html")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for tag, attrs in parse(html).elements:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed")
        for name in ("src", "href", "xlink:href"):
            value = attrs.get(name, "")
            assert not value or value.startswith("#"), f"{tag} {name}={value}"
    assert "url(" not in html and "@import" not in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_html_brief_has_no_diagrams(capture: Path) -> None:
    page = parse(run_cli(str(capture), "-f", "html", "--brief"))
    assert not page.classed("svg", "ladder")
    assert len(page.classed("section", "session")) == 5


def test_html_redacted_footer(capture: Path) -> None:
    page = parse(run_cli(str(capture), "-f", "html", "--redact", "--failures-only"))
    text = "".join(page.text)
    assert "Redacted" in text and re.search(r"\d+ addresses", text)
    assert "sessions shown (--failures-only)" in text


# ---------------------------------------------------------------------------
# real Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium not installed (apt-get install chromium)")

PROBE = """<script>
(function () {
  var svgs = document.querySelectorAll('svg.ladder');
  var out = {svgs: svgs.length, laidOut: 0, sections: document.querySelectorAll(
    'section.session').length, resources: performance.getEntriesByType('resource').length,
    overflow: 0, events: 0};
  svgs.forEach(function (svg) {
    var r = svg.getBoundingClientRect();
    if (r.width > 500 && r.height > 100) out.laidOut++;
    var box = svg.getBBox();
    svg.querySelectorAll('g.event text.label').forEach(function (t) {
      out.events++;
      var b = t.getBBox();
      var lo = t.getAttribute('text-anchor') === 'middle' ? LEFT : 0;
      var hi = t.getAttribute('text-anchor') === 'middle' ? RIGHT : svg.viewBox.baseVal.width;
      if (b.x < lo || b.x + b.width > hi) out.overflow++;
    });
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>""".replace("LEFT", str(X_CLIENT)).replace("RIGHT", str(X_SERVER))


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    profile.mkdir()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of a PNG (8-bit, colour type 2 or 6)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            bpp = 3 if colour == 2 else 4
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    raw, rows, prev = zlib.decompress(idat), [], bytearray(width * bpp)
    stride = width * bpp + 1
    for y in range(height):
        f, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line[i:i + 3]) for i in range(0, len(line), bpp))
        rows[-1] = list(rows[-1])
        prev = line
    return width, height, rows


def _near(px: bytes, rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(p - q) <= tol for p, q in zip(px, rgb, strict=True))


@needs_chromium
def test_chromium_lays_out_one_diagram_per_session_and_fetches_nothing(
        capture: Path, tmp_path: Path) -> None:
    html = run_cli(str(capture), "-f", "html")
    # The page forbids scripts (CSP); the test's copy allows its own probe and nothing else.
    probe_page = html.replace("default-src 'none';", "default-src 'none'; "
                              "script-src 'unsafe-inline';").replace("</body>",
                                                                     PROBE + "</body>")
    page = tmp_path / "probe.html"
    page.write_text(probe_page, encoding="utf-8")
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    m = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert m, done.stderr[-2000:]
    import json

    probe = json.loads(m.group(1))
    assert probe["svgs"] == 5 and probe["sections"] == 5
    assert probe["laidOut"] == 5
    assert probe["resources"] == 0, "the page fetched something"
    assert probe["events"] > 50
    assert probe["overflow"] == 0, "an event label runs outside its diagram"


@needs_chromium
def test_chromium_screenshot_shows_the_diagram(capture: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(run_cli(str(capture), "-f", "html", "--session", "2"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars",
              page.as_uri()], tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1400)
    pixels = [px for row in rows[::2] for px in row[::2]]
    colours = {
        "client arrows": (0x1F, 0x4E, 0x9C),
        "server arrows": (0x2C, 0x7A, 0x2C),
        "death marker": (0xD0, 0x00, 0x00),
        "evidence band": (0xFF, 0xF3, 0xB0),
    }
    for what, rgb in colours.items():
        assert sum(_near(px, rgb) for px in pixels) > 20, f"no {what} in the screenshot"
    assert len(set(pixels)) > 50  # not a blank page


@needs_chromium
@pytest.mark.parametrize("sample", [s for s in SAMPLES if "tls" in s.stem][:3],
                         ids=lambda p: p.stem)
def test_chromium_renders_samples_redacted(sample: Path, tmp_path: Path) -> None:
    html = run_cli(str(sample), "-f", "html", "--redact")
    page = tmp_path / "s.html"
    page.write_text(html.replace("</body>", PROBE + "</body>").replace(
        "default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';"),
        encoding="utf-8")
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    m = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert m, done.stderr[-2000:]
    import json

    probe = json.loads(m.group(1))
    assert probe["svgs"] == probe["sections"] == probe["laidOut"] >= 1
    assert probe["resources"] == 0 and probe["overflow"] == 0


def test_json_dump_matches_the_stdlib_in_value_and_takes_what_orjson_refuses() -> None:
    """render.json writes with orjson; a value it refuses (an int over 64 bits) goes
    through the stdlib instead of failing the report, and both give the same document."""
    import json

    from pcapsmtp.render.json import _dump

    doc = {"id": 1, "rel": 9.9e-05, "text": "é \\x00 <a@b>", "n": [1, None, True],
           "big": 2**70}
    out = _dump(doc)
    assert json.loads(out) == doc
    assert str(2**70) in out  # written whole, not refused
    small = {k: v for k, v in doc.items() if k != "big"}
    assert json.loads(_dump(small)) == small
    assert _dump(small).startswith('{"id":1,')  # compact: store.around_id cuts here


def _random_text(rnd: random.Random) -> str:
    """Words (some wider than a line) between runs of spaces (some wider than a line),
    sometimes with spaces in front or behind: what textwrap's chunk rules are about."""
    def spaces() -> str:
        r = rnd.random()
        return " " * (1 if r < 0.85 else rnd.randint(2, 5) if r < 0.97 else rnd.randint(80, 260))

    parts = [spaces()] if rnd.random() < 0.1 else []
    for _ in range(rnd.randint(0, 40)):
        long = rnd.random() < 0.2
        parts.append("".join(rnd.choice("abcé→-.,`'(") for _ in range(
            rnd.randint(13, 250) if long else rnd.randint(1, 12))))
        parts.append(spaces())
    if parts and rnd.random() < 0.7:
        parts.pop()
    return "".join(parts)


def test_text_wrap_of_printable_text_is_textwrap() -> None:
    """The text report's own wrapping of printable text (render.text._wrap_printable) cuts
    lines where textwrap.wrap would, trailing spaces and all, on 5,000 random texts."""
    import textwrap

    from pcapsmtp.render.text import WIDTH, _wrap, _wrap_printable

    rnd = random.Random(20261124)
    indents = ["", "  ", "    ", "    - ", "      "]
    for _ in range(5000):
        text = _random_text(rnd)
        first, rest = rnd.choice(indents), rnd.choice(indents)
        want = textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                             break_long_words=True, break_on_hyphens=False)
        assert _wrap_printable(text, first, rest) == want, (text, first, rest)
        assert _wrap(text, first, rest) == (want or [first.rstrip()])
