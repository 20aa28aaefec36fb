"""Issue 33: a failed run's verdict is in its name, which the Prefect UI shows without hovering."""

from __future__ import annotations

from wheelflow.ops.verdict import verdict_run_name


def test_a_failed_run_is_named_after_its_verdict_on_one_line_within_the_limit() -> None:
    assert (
        verdict_run_name("auburn-collie", "install + smoke on staging failed:\n  the kernel returned garbage")
        == "auburn-collie: install + smoke on staging failed: the kernel returned garbage"
    )
    long = verdict_run_name("auburn-collie", "build failed: " + "x" * 500, limit=60)
    assert len(long) == 60 and long.startswith("auburn-collie: build failed: x") and long.endswith("…")
    assert verdict_run_name("auburn-collie", "  ") == "auburn-collie"
