"""The package's own claims: every declared dependency is used, every repo file it cites
exists (issue 17: pyshark declared and never imported; five citations of a DESIGN.md
that is not in the repository)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

# tomllib is in the standard library from Python 3.11 (the package supports 3.10)
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pcapsmtp", "dissectors")
#: a distribution's name where its import name differs
IMPORT_NAME = {"pyyaml": "yaml", "scikit-learn": "sklearn"}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imported_roots() -> set[str]:
    roots: set[str] = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                roots.add(node.module.split(".")[0])
    return roots


def test_every_declared_dependency_is_imported() -> None:
    """A dependency nothing imports only costs the user an install (pyshark pulled in
    lxml and termcolor for nothing)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].strip().lower() for d in deps]
    imported = _imported_roots()
    unused = [n for n in names if IMPORT_NAME.get(n, n.replace("-", "_")) not in imported]
    assert not unused, f"declared in pyproject.toml, imported nowhere: {unused}"


# a path into the repository ("docs/json.md", "../DESIGN.md") or a top-level NAME.md
CITED = re.compile(r"(?<![\w/:.-])((?:\.\./|[\w-]+/)+[\w.-]+\.\w+|[A-Z][A-Z_]+\.md)\b")


def _cited(path: Path) -> list[tuple[str, Path]]:
    """(as written, where it points) for each citation of a file of this repository."""
    top = {p.name for p in ROOT.iterdir()}
    found = []
    for m in CITED.finditer(path.read_text(encoding="utf-8")):
        text = m.group(1)
        if text.startswith("../"):
            found.append((text, (path.parent / text).resolve()))
        elif "/out/" in text:
            continue  # made by a script (benchmarks/make_capture.py), not kept in git
        elif "/" not in text or text.split("/")[0] in top:
            found.append((text, ROOT / text))
    return found


def test_no_citation_of_a_missing_repo_file() -> None:
    missing = [f"{p.relative_to(ROOT)}: {text}" for p in _sources()
               for text, target in _cited(p) if not target.exists()]
    assert not missing, "cited, not in the repository: " + "; ".join(missing)


def test_the_citation_check_sees_a_missing_file() -> None:
    """The pattern finds the forms the old text used, so the test above can fail."""
    text = "(see ../DESIGN.md), DESIGN.md (x), docs/json-schema.md, docs/json.md, " \
           "https://example.org/a/b.txt, technical_details/JA4.md"
    found = [m.group(1) for m in CITED.finditer(text)]
    assert found[:4] == ["../DESIGN.md", "DESIGN.md", "docs/json-schema.md", "docs/json.md"]
    assert "b.txt" not in " ".join(found)
