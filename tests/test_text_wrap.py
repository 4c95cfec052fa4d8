"""render.text._wrap (a one-line fast path in front of textwrap) gives what textwrap gives."""

from __future__ import annotations

import random
import textwrap

from pcapsmtp.render import text


def _textwrap(s: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(s, text.WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=True, break_on_hyphens=False) or [first.rstrip()]


def test_wrap_matches_textwrap_on_random_text() -> None:
    rng = random.Random(1)
    printable = ["a", "bc", "-", ".", " ", "  ", "é", "→", "`", "x" * 30, "y" * 120, "z" * 99]
    other = [*printable, "\t", "\n"]
    indents = [("", ""), ("  ", "  "), ("    - ", "      "), ("  ", "    "),
               (" " * 99, " " * 98)]  # (an indent as wide as the line hangs textwrap itself)
    for _ in range(20000):
        alphabet = printable if rng.random() < 0.9 else other  # printable: the fast path
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        first, rest = rng.choice(indents)
        assert text._wrap(s, first, rest) == _textwrap(s, first, rest), (s, first, rest)
