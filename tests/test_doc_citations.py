"""Every "ARCHITECTURE §n" and "MEASUREMENTS §n.m" that code, tests, tools and docs cite names a
heading those pages have: the design page and its measurements are cited by number, and a
section moved or renumbered would leave its citations pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"\b(ARCHITECTURE|MEASUREMENTS) §(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", re.MULTILINE)
SOURCES = ("node", "protocol", "storage", "tools", "tests", "docs")


def _headings(page: str) -> set[str]:
    return set(HEADING.findall((ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8")))


def _citations(text: str) -> list[tuple[str, str]]:
    return CITATION.findall(text)


def _cited_files() -> list[Path]:
    files = [ROOT / name for name in ("README.md", "SPEC.md")]
    for source in SOURCES:
        files += sorted(p for p in (ROOT / source).rglob("*") if p.suffix in {".py", ".md"})
    return [path for path in files if path != Path(__file__).resolve()]  # its own bad example


def test_every_cited_section_is_a_heading_of_its_page() -> None:
    headings = {page: _headings(page) for page in ("ARCHITECTURE", "MEASUREMENTS")}
    cited = {
        (path.relative_to(ROOT).as_posix(), page, number)
        for path in _cited_files()
        for page, number in _citations(path.read_text(encoding="utf-8"))
    }
    assert cited, "no citation found: the pattern no longer matches how the code cites"
    dangling = sorted(c for c in cited if c[2] not in headings[c[1]])
    assert dangling == []


def test_a_citation_of_a_missing_section_is_caught() -> None:
    headings = _headings("MEASUREMENTS")
    assert _citations("see MEASUREMENTS §99.9") == [("MEASUREMENTS", "99.9")]
    assert "99.9" not in headings
    assert "3.1" in headings and "10" in _headings("ARCHITECTURE")
