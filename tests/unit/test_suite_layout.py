"""`pytest` at the repository root collects tests/unit and tests/e2e together: with pytest's default
import mode two test modules of one basename (neither folder is a package) stop the whole collection
with "import file mismatch", so each test module's basename is used once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    counts = Counter(path.name for folder in ("unit", "e2e") for path in (TESTS / folder).glob("test_*.py"))
    assert [name for name, count in counts.items() if count > 1] == []
