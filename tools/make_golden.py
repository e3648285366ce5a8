"""Make the golden vectors under tests/golden/ with the real libraries (never run in CI).

    python tools/make_golden.py            # every group
    python tools/make_golden.py formats    # only some groups

Each group is a module ``tools/golden/<group>.py`` with a ``make(out_dir) -> list[Path]``
function. It needs torch, ml_dtypes, bitsandbytes and peft in a separate venv
(see docs/facts.md §7 and the README's "Golden vectors" section); the tests that read the
vectors need none of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden"
GROUPS = sorted(p.stem for p in (ROOT / "tools" / "golden").glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"groups (default: all of {GROUPS})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; valid: {GROUPS}")
    OUT.mkdir(parents=True, exist_ok=True)
    for group in args.groups or GROUPS:
        module = importlib.import_module(f"golden.{group}")
        for path in module.make(OUT):
            print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
