"""The worked example of docs/testing.md runs: hypothesis finds each planted mistake, shrinks it to a few
elements, and the page shows exactly the reports the code produces (tools/testing_docs.py writes them)."""

import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import testing_docs  # noqa: E402


@pytest.fixture(scope="module")
def reports():
    return testing_docs.reports()


@pytest.mark.parametrize("name", list(testing_docs.TESTS))
def test_each_mistake_is_found_and_the_correct_quantizer_passes(reports, name):
    must_fail = testing_docs.TESTS[name]
    assert (reports[name] is not None) == must_fail, reports[name]


@pytest.mark.parametrize("name", [n for n, fails in testing_docs.TESTS.items() if fails])
def test_the_shrunk_example_is_small(reports, name):
    report = reports[name]
    assert "Failing test case:" in report and "AssertionError:" in report
    n = int(re.search(r": \d+ of (\d+) (?:elements|codes)", report).group(1))
    assert n <= 4, f"{name} shrank to {n} elements only"


def test_the_page_shows_the_real_reports(reports):
    page = testing_docs.PAGE.read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- report: (\w+) -->\n```text\n(.*?)```\n<!-- /report -->", page, re.S))
    assert set(blocks) == {n for n, fails in testing_docs.TESTS.items() if fails}
    for name, text in blocks.items():
        assert text == reports[name], (
            f"docs/testing.md shows an old report for {name}: run PYTHONPATH=. python tools/testing_docs.py")


def test_the_page_shows_the_example_code():
    """The page quotes the example file's functions verbatim (a test of the quote, not of the code)."""
    page = testing_docs.PAGE.read_text(encoding="utf-8")
    source = testing_docs.EXAMPLE.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", page, re.S):
        if "# from docs/examples/test_broken_quantizer.py" in block:
            body = block.split("\n", 1)[1]
            assert body in source, f"docs/testing.md quotes code that is not in the example file:\n{body}"
