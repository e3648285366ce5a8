"""docs/facts.md and docs/errata.md: every citation of them in the repository points at something that exists.

Code, tests and notebooks cite "docs/facts.md §N" and "docs/errata.md, erratum N" (or "errata N–M"); the
numbering is fixed (facts: the sections; errata: the bold numbers), so a citation can only break by a typo or
a deletion, which this test catches.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
facts_md = (ROOT / "docs" / "facts.md").read_text(encoding="utf-8")
errata_md = (ROOT / "docs" / "errata.md").read_text(encoding="utf-8")
SECTIONS = {int(n) for n in re.findall(r"^## (\d+)\. ", facts_md, flags=re.M)}
ERRATUM_NUMBERS = {int(n) for n in re.findall(r"^\*\*(\d+)\. ", errata_md, flags=re.M)}
CITING = [p for pattern in ("minilora/**/*.py", "tests/**/*.py", "tools/**/*.py", "notebooks/**/*.py",
                            "benchmarks/**/*.py", "docs/*.md", "README.md")
          for p in ROOT.glob(pattern)]


def citations(pattern: str) -> list[tuple[str, int]]:
    out = []
    for path in CITING:
        for match in re.finditer(pattern, path.read_text(encoding="utf-8")):
            for n in re.findall(r"\d+", match.group(1)):
                out.append((str(path.relative_to(ROOT)), int(n)))
    return out


def test_facts_sections_are_numbered_1_to_n():
    assert SECTIONS == set(range(1, max(SECTIONS) + 1))


def test_errata_keep_their_numbers_and_each_quotes_the_blog():
    assert set(range(1, 13)) <= ERRATUM_NUMBERS  # the original list, numbers kept
    blocks = re.split(r"^\*\*(?=\d+\. )", errata_md, flags=re.M)[1:]
    for block in blocks:
        assert "\n> " in block, f"erratum {block.split('.')[0]} quotes no sentence of the blog"


def test_every_facts_citation_resolves():
    found = citations(r"docs/facts\.md,? §+\s?([\d–\-, §]+)")
    bad = [(p, n) for p, n in found if n not in SECTIONS]
    assert not bad, f"citations of missing docs/facts.md sections: {bad}"


def test_every_errata_citation_resolves():
    found = citations(r"docs/errata\.md`?,? errat(?:um|a) ([\d–\-, ]+)")
    found += citations(r"erratum (\d+)")
    bad = [(p, n) for p, n in found if n not in ERRATUM_NUMBERS]
    assert not bad, f"citations of missing errata: {bad}"
