"""Render the faults and bad inputs tried by the last test run as README.md's table.

    python -m pytest            # writes .wheelflow-cases.json (tests marked @pytest.mark.case)
    python tools/case_table.py  # replaces the table between the markers in README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- cases:begin -->", "<!-- cases:end -->"
ORDER = {"fault": 0, "bad input": 1, "secret": 2}


def render(cases: dict[str, dict]) -> str:
    rows = sorted(cases.values(), key=lambda c: (ORDER.get(c["kind"], 9), c["case"]))
    lines = ["| kind | case | what wheelflow does | result | test |", "|---|---|---|---|---|"]
    for c in rows:
        test = c["test"].split("::")[0].removeprefix("tests/")
        lines.append(f"| {c['kind']} | {c['case']} | {c['expected']} | {c['result']} | `{test}` |")
    return "\n".join(lines)


def main() -> int:
    cases_file = ROOT / ".wheelflow-cases.json"
    if not cases_file.exists():
        print("no .wheelflow-cases.json: run the tests first", file=sys.stderr)
        return 1
    table = render(json.loads(cases_file.read_text()))
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(table)
        return 0
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"README.md: {len(table.splitlines()) - 2} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
