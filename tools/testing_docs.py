"""Run the worked example of docs/testing.md and write its real hypothesis reports into the page.

    PYTHONPATH=. python tools/testing_docs.py           # rewrite the reports in docs/testing.md
    PYTHONPATH=. python tools/testing_docs.py --check   # exit 1 if the page is out of date

Each test of ``docs/examples/test_broken_quantizer.py`` runs under fixed settings (200 examples,
derandomized, no example database), so the shrunk examples are the same on every run; the report of a
failing test is hypothesis' "failing test case" note followed by the kit's assertion message. The page holds
each report between ``<!-- report: NAME -->`` and ``<!-- /report -->``. ``tests/testing/test_docs_example.py``
runs the same code and checks the page against it.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, Phase, settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "test_broken_quantizer.py"
PAGE = ROOT / "docs" / "testing.md"
#: the tests of the example, in the order the page shows them, and whether each must find a bug
TESTS = {"test_bound": False, "test_codes": False, "test_half_away_bound": False, "test_half_away_codes": True,
         "test_wrong_axis_bound": True, "test_fake_quant_bound": True}
SETTINGS = settings(max_examples=200, derandomize=True, database=None, deadline=None, print_blob=False,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck))
_BLOCK = re.compile(r"(<!-- report: (\w+) -->\n```text\n)(.*?)(```\n<!-- /report -->)", re.S)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_example_broken_quantizer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(test) -> str | None:
    """Run one hypothesis test under :data:`SETTINGS`; its failure report, or None when it passes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            SETTINGS(test)()
        except AssertionError as e:
            notes = "\n".join(getattr(e, "__notes__", []))
            return f"{notes}\nAssertionError: {e}\n"
    return None


def reports() -> dict[str, str | None]:
    module = load_example()
    return {name: run(getattr(module, name)) for name in TESTS}


def render(page: str, found: dict[str, str | None]) -> str:
    """``page`` with every report block replaced by the report just produced."""
    def repl(m: re.Match) -> str:
        text = found.get(m.group(2))
        if text is None:
            raise ValueError(f"docs/testing.md has a report block for {m.group(2)!r}, which found no bug")
        return m.group(1) + text + m.group(4)
    return _BLOCK.sub(repl, page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the page is current")
    args = ap.parse_args(argv)
    found = reports()
    for name, must_fail in TESTS.items():
        if (found[name] is not None) != must_fail:
            print(f"{name}: expected it to {'fail' if must_fail else 'pass'}", file=sys.stderr)
            return 1
    page = PAGE.read_text(encoding="utf-8")
    new = render(page, found)
    if args.check:
        if new != page:
            print("docs/testing.md is out of date: run PYTHONPATH=. python tools/testing_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new, encoding="utf-8")
    print(f"wrote {sum(v is not None for v in found.values())} reports into {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
