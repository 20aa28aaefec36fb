"""The README's main command, on a fresh clone and a fresh HOME, while CPU-bound processes keep the cores busy.

Each attempt clones this repository's HEAD into a new folder, sets HOME to a new empty folder, removes
every PREFECT_* and WHEELFLOW_* variable (nothing configured, as on a laptop) and runs the command
between ``<!-- main-command -->`` and the end of its code block in README.md, exactly as written:
virtual environment, ``pip install .``, ``wheelflow release examples/hello-cuda``. An attempt passes
when the command exits 0 and its output ends with ``see it in the Prefect UI: http://127.0.0.1:PORT/runs/flow-run/ID``.
The home's Prefect server is stopped after each attempt (``wheelflow server stop``).

    python bench/first_contact.py                 # 5 attempts, 2 CPU-bound processes beside them
    python bench/first_contact.py --runs 1 --keep  # one attempt; keep its folder (the log is in it)
    python bench/first_contact.py --runs 1 --no-docker  # a machine without a Docker engine

This is the issue's "done when" check, not a timed test: it prints each attempt's wall time for the
record, and exits 0 only when every attempt passed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"see it in the Prefect UI: http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}")


def main_command(readme: Path) -> str:
    text = readme.read_text()
    block = text.split("<!-- main-command -->", 1)[1]
    return block.split("```sh", 1)[1].split("```", 1)[0].strip()


def attempt(command: str, keep: bool, no_docker: bool = False) -> tuple[bool, float, str, Path]:
    root = Path(tempfile.mkdtemp(prefix="wheelflow-first-contact-"))
    clone, home = root / "clone", root / "home"
    home.mkdir()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WHEELFLOW_", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    if no_docker:
        env["DOCKER_HOST"] = f"unix://{root}/no-docker.sock"
    log = root / "output.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
    took = time.monotonic() - started
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    ok = done.returncode == 0 and bool(LINK.fullmatch(last.strip()))
    wheelflow = clone / ".venv" / "bin" / "wheelflow"
    if wheelflow.exists():
        subprocess.run([str(wheelflow), "server", "stop"], cwd=clone, env=env, capture_output=True)
    if not keep and ok:
        shutil.rmtree(root, ignore_errors=True)
    return ok, took, last if ok else f"exit {done.returncode}; last line: {last}", root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes beside the command")
    parser.add_argument("--keep", action="store_true", help="keep each attempt's folder (failed ones are always kept)")
    parser.add_argument(
        "--no-docker", action="store_true", help="DOCKER_HOST points at nothing: a laptop without a Docker engine"
    )
    args = parser.parse_args()
    command = main_command(REPO / "README.md")
    docker = ", Docker unreachable" if args.no_docker else ""
    print(f"{datetime.date.today()}, {os.cpu_count()} CPUs, {args.burners} CPU-bound processes{docker}: {command}")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    passed = 0
    try:
        for n in range(1, args.runs + 1):
            ok, took, detail, root = attempt(command, args.keep, args.no_docker)
            passed += ok
            print(
                f"attempt {n}: {'passed' if ok else 'FAILED'} in {took:.0f} s: {detail}" + ("" if ok else f" ({root})")
            )
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    print(f"{passed}/{args.runs} passed")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
