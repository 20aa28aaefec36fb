"""Render the faults and bad inputs tried by the last test run as the table in docs/faults.md.

    python -m pytest            # writes .wheelflow-cases.json (tests marked @pytest.mark.case)
    python tools/case_table.py  # replaces the rows between the markers in docs/faults.md

Only the block between ``<!-- cases:begin -->`` and ``<!-- cases:end -->`` is rewritten; a page
without both markers is left alone and the tool exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES_FILE = ROOT / ".wheelflow-cases.json"
OUTPUT = ROOT / "docs" / "faults.md"
BEGIN, END = "<!-- cases:begin -->", "<!-- cases:end -->"
ORDER = {"fault": 0, "bad input": 1, "secret": 2}


def render(cases: dict[str, dict]) -> str:
    rows = sorted(cases.values(), key=lambda c: (ORDER.get(c["kind"], 9), c["case"]))
    lines = ["| kind | case | what wheelflow does | result | test |", "|---|---|---|---|---|"]
    for c in rows:
        test = c["test"].split("::")[0].removeprefix("tests/")
        lines.append(f"| {c['kind']} | {c['case']} | {c['expected']} | {c['result']} | `{test}` |")
    return "\n".join(lines)


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main() -> int:
    if not CASES_FILE.exists():
        print(f"no {CASES_FILE.name}: run the tests first", file=sys.stderr)
        return 1
    table = render(json.loads(CASES_FILE.read_text()))
    where = OUTPUT.relative_to(ROOT)
    text = OUTPUT.read_text() if OUTPUT.exists() else ""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        print(f"{where}: needs one {BEGIN} line before one {END} line; nothing written", file=sys.stderr)
        return 1
    OUTPUT.write_text(replace_table(text, table))
    print(f"{where}: {len(table.splitlines()) - 2} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
