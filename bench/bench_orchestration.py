"""Benchmark: orchestration overhead of a release through Prefect, against a plain shell script.

Both do the same work on the same tiny project, each against a fresh pypiserver on loopback:
  script     python -m build (this interpreter, whatever is on PATH); twine upload; pip install into a fresh venv; run the smoke command
  equal      the script plus the work wheelflow adds: twine check before the upload, every served file
             downloaded from the Simple API and its sha256 compared, and the install and smoke repeated with uv
  wheelflow  `wheelflow trigger release --wait` on a deployment served by `wheelflow serve`
             (which also checks every file and reads the index back before installing)
Prints each run's wall time and the ratios of the medians (wheelflow / script, wheelflow / equal), all
from this one run.

    python bench/bench_orchestration.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import INDEX_PASSWORD, INDEX_USER, make_project, start_prefect_server  # noqa: E402

from wheelflow.index.localindex import PypiServer, ensure_htpasswd  # noqa: E402

SCRIPT = """set -euo pipefail
rm -rf "$WORK/dist" "$WORK/venv"
"$PY" -m build --outdir "$WORK/dist" "$PROJECT" >/dev/null 2>&1
"$PY" -m twine upload --non-interactive --disable-progress-bar --repository-url "$UPLOAD" -u "$USER_NAME" -p "$PASSWORD" "$WORK"/dist/* >/dev/null
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --no-cache-dir --index-url "$SIMPLE" tiny-pkg==1.0.0
"$WORK/venv/bin/python" -c 'import tiny_pkg; assert tiny_pkg.answer() == 42'
"""

EQUAL = """set -euo pipefail
rm -rf "$WORK/dist" "$WORK/venv" "$WORK/uvenv"
"$PY" -m build --outdir "$WORK/dist" "$PROJECT" >/dev/null 2>&1
"$PY" -m twine check --strict "$WORK"/dist/* >/dev/null
"$PY" -m twine upload --non-interactive --disable-progress-bar --repository-url "$UPLOAD" -u "$USER_NAME" -p "$PASSWORD" "$WORK"/dist/* >/dev/null
"$PY" - "$SIMPLE" "$WORK/dist" <<'PYEOF'
import hashlib, re, sys, urllib.parse, urllib.request
from pathlib import Path
simple, dist = sys.argv[1], Path(sys.argv[2])
page = urllib.request.urlopen(simple + "tiny-pkg/").read().decode()
links = {urllib.parse.unquote(h.split("#")[0].rsplit("/", 1)[-1]): urllib.parse.urljoin(simple + "tiny-pkg/", h) for h in re.findall(r'href="([^"]+)"', page)}
for built in dist.iterdir():
    served = urllib.request.urlopen(links[built.name]).read()
    assert hashlib.sha256(served).hexdigest() == hashlib.sha256(built.read_bytes()).hexdigest(), built.name
PYEOF
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --no-cache-dir --index-url "$SIMPLE" tiny-pkg==1.0.0
"$WORK/venv/bin/python" -c 'import tiny_pkg; assert tiny_pkg.answer() == 42'
"$UV" venv --quiet --python "$PY" "$WORK/uvenv"
VIRTUAL_ENV="$WORK/uvenv" "$UV" pip install --quiet --no-cache --index-url "$SIMPLE" tiny-pkg==1.0.0
"$WORK/uvenv/bin/python" -c 'import tiny_pkg; assert tiny_pkg.answer() == 42'
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    wheelflow = str(Path(sys.executable).with_name("wheelflow"))
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        (tmp / "prefect").mkdir()
        server, api = start_prefect_server(tmp / "prefect")
        ensure_htpasswd(tmp / "htpasswd", INDEX_USER, INDEX_PASSWORD)
        home = tmp / "home"
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "WHEELFLOW_HOME": str(home),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
            "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        }
        serve = subprocess.Popen(
            [wheelflow, "serve", "--only", "release"],
            env=env,
            stdout=open(tmp / "serve.log", "wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        times: dict[str, list[float]] = {"script": [], "equal": [], "wheelflow": []}
        try:
            for run in range(args.runs + 1):  # run 0 warms both paths (pip caches, imports) and is not counted
                for label in ("script", "equal", "wheelflow"):
                    packages = tmp / f"index-{label}-{run}"
                    with PypiServer(packages, tmp / "htpasswd") as index:
                        project = make_project(tmp / f"project-{label}-{run}", index_url=index.simple_url)
                        shutil.rmtree(home / "builds", ignore_errors=True)  # no build cache: same work as the script
                        started = time.perf_counter()
                        if label in ("script", "equal"):
                            subprocess.run(
                                ["bash", "-c", SCRIPT if label == "script" else EQUAL],
                                check=True,
                                env={
                                    **env,
                                    "WORK": str(tmp / f"work-{run}"),
                                    "PROJECT": str(project),
                                    "UPLOAD": index.url,
                                    "SIMPLE": index.simple_url,
                                    "PY": sys.executable,
                                    "UV": shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv",
                                    "USER_NAME": INDEX_USER,
                                    "PASSWORD": INDEX_PASSWORD,
                                    "PIP_CONFIG_FILE": os.devnull,
                                },
                            )  # as wheelflow installs: this index only
                        else:
                            done = subprocess.run(
                                [
                                    wheelflow,
                                    "trigger",
                                    "release",
                                    "--param",
                                    f"project={project}",
                                    "--wait",
                                    "--timeout",
                                    "600",
                                ],
                                env=env,
                                capture_output=True,
                                text=True,
                            )
                            if done.returncode != 0:
                                raise SystemExit(f"wheelflow trigger failed: {done.stderr[-2000:]}")
                        elapsed = time.perf_counter() - started
                        if run:
                            times[label].append(elapsed)
                        print(f"run {run} {label:<10} {elapsed:7.2f} s{'  (warm-up)' if not run else ''}", flush=True)
        finally:
            serve.terminate()
            serve.wait(30)
            server.terminate()
            server.wait(30)
        script, equal, flow = (statistics.median(times[k]) for k in ("script", "equal", "wheelflow"))
        print(
            f"median script {script:.2f} s, equal-work script {equal:.2f} s, wheelflow {flow:.2f} s; "
            f"wheelflow / script {flow / script:.2f}, wheelflow / equal-work {flow / equal:.2f}"
        )


if __name__ == "__main__":
    main()
