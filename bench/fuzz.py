"""The fuzz properties of tests/unit/test_fuzz.py at full count: cases, failures and ms per case.

    .venv/bin/python bench/fuzz.py [--cases 3000] [--only plan,virtualservice,httproute,templates] [--json]

Each property (tests/unit/fuzz_cases.py) runs `--cases` generated cases, derandomized and
without an example database (the same cases every run). A failing case is counted and the run
goes on; the first failure of each property is printed. `make test` runs 150 per property.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tests.unit import fuzz_cases as fc  # noqa: E402 - the repository root is on sys.path only from here


@dataclass
class Figures:
    property: str
    cases: int = 0
    failures: int = 0
    ms_per_case: float = 0.0
    first_failure: str = ""


PROPERTIES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "plan": (fc.planner_cases(), fc.check_plan),
    "virtualservice": (fc.istio_cases(), fc.check_virtual_service),
    "httproute": (fc.GATEWAY_CASES, fc.check_http_route),
    "templates": (st.tuples(fc.TEMPLATES, fc.rollout_docs()), lambda pair: fc.check_templates(*pair)),
}


def run(name: str, cases: int) -> Figures:
    strategy, check = PROPERTIES[name]
    figures = Figures(name)
    spent = 0.0

    @settings(
        max_examples=cases,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # failures are counted, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case: Any) -> None:
        nonlocal spent
        figures.cases += 1
        start = time.perf_counter()
        try:
            check(case)
        except Exception as exc:  # every escaping exception is a failure of the property
            figures.failures += 1
            if not figures.first_failure:
                figures.first_failure = "".join(traceback.format_exception_only(exc)).strip()[:500]
        finally:
            spent += time.perf_counter() - start

    one()
    figures.ms_per_case = round(1000 * spent / max(figures.cases, 1), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=3000, help="cases per property")
    parser.add_argument("--only", default=",".join(PROPERTIES), help="comma-separated properties")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run(name, args.cases) for name in args.only.split(",") if name]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print(f"{'property':<16}{'cases':>8}{'failures':>10}{'ms/case':>10}")
    for r in rows:
        print(f"{r.property:<16}{r.cases:>8}{r.failures:>10}{r.ms_per_case:>10.2f}")
        if r.first_failure:
            print(f"  first failure: {r.first_failure}")
    if any(r.failures for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
