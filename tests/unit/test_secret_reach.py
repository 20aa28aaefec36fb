"""Credentials out of reach of code we do not control (issue 27, item 2): not in any process's start
environment or command line, not readable from wheelflow's memory by the same user, and masked in
output whatever the encoding, even split across lines."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from wheelflow.core.redaction import LineRedactor, encodings, redact, register_secret

# The wheelflow process, as a release runs it: it hides its secrets first, then runs code we do not
# control (here the attacker, started as builds and smoke commands are: with the allow-listed env).
HELPER = textwrap.dedent("""
    import json, os, subprocess, sys
    from wheelflow.core.childenv import child_env
    from wheelflow.core.secretenv import environ, hide_secrets
    hide_secrets(["release"], command=[sys.executable, *sys.argv])
    attacker = subprocess.run(
        [sys.executable, sys.argv[1], str(os.getpid()), sys.argv[2]], env=child_env(), capture_output=True, text=True
    )
    print(json.dumps({"held": environ().get("WHEELFLOW_STAGING_PASSWORD"), "attacker": attacker.stdout}))
    """)
# A setup.py or smoke command hunting for credentials: every process's start environment and
# command line, and wheelflow's own memory.
ATTACKER = textwrap.dedent("""
    import glob, json, sys
    wheelflow, dump = sys.argv[1], sys.argv[2]
    found, denied = [], []
    for path in [*glob.glob("/proc/[0-9]*/environ"), *glob.glob("/proc/[0-9]*/cmdline"), f"/proc/{wheelflow}/mem"]:
        try:
            with open(path, "rb") as f:
                found.append(b"" if path.endswith("/mem") else f.read(1 << 20))
        except OSError as exc:
            if path.startswith(f"/proc/{wheelflow}/"):
                denied.append(path.rsplit("/", 1)[-1])
    open(dump, "wb").write(b"\\n".join(found))
    print(json.dumps({"denied": denied}))
    """)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
@pytest.mark.case(
    "secret",
    "code run by a release reads /proc/*/environ, /proc/*/cmdline and wheelflow's memory",
    "no secret in any start environment or command line; as a user without capabilities, "
    "wheelflow's /proc/PID/environ and mem are refused (non-dumpable)",
)
@pytest.mark.parametrize("user", ["root", "a user without capabilities"])
def test_code_we_do_not_control_finds_no_credential_in_proc(tmp_path: Path, user: str) -> None:
    prefix: list[str] = []
    if user != "root":
        setpriv = shutil.which("setpriv")
        if setpriv is None or os.geteuid() != 0:
            pytest.skip("setpriv as root drops every capability: the same uid then behaves as a plain user")
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    secret, api_key = f"wf-secret-{uuid.uuid4().hex}", f"pk-secret-{uuid.uuid4().hex}"
    (tmp_path / "helper.py").write_text(HELPER)
    (tmp_path / "attacker.py").write_text(ATTACKER)
    dump = tmp_path / "dump"
    env = {**os.environ, "WHEELFLOW_STAGING_PASSWORD": secret, "PREFECT_API_KEY": api_key}
    result = subprocess.run(
        [*prefix, sys.executable, str(tmp_path / "helper.py"), str(tmp_path / "attacker.py"), str(dump)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["held"] == secret  # wheelflow still has it, in memory
    seen = dump.read_bytes()
    assert seen  # the attacker did read other processes' environments
    for value in (secret, api_key):
        for form in (value, *encodings(value)):
            assert form.encode() not in seen, f"{form} was readable under /proc"
    if user != "root":
        assert set(json.loads(report["attacker"])["denied"]) == {"environ", "mem"}


@pytest.mark.case(
    "secret",
    "output prints a secret base64-encoded, URL-encoded, in hex, reversed, or split across two lines",
    "masked as *** in every form",
)
@pytest.mark.parametrize("form", ["base64", "base64 url-safe unpadded", "url-encoded", "hex", "HEX", "reversed"])
def test_common_encodings_of_a_secret_are_masked(form: str) -> None:
    secret = f"p@ss/w0rd+{uuid.uuid4().hex[:12]}"
    register_secret(secret)
    encoded = {
        "base64": base64.b64encode(secret.encode()).decode(),
        "base64 url-safe unpadded": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        "url-encoded": quote(secret, safe=""),
        "hex": secret.encode().hex(),
        "HEX": secret.encode().hex().upper(),
        "reversed": secret[::-1],
    }[form]
    assert redact(f"smoke says: {encoded} (done)") == "smoke says: *** (done)"


@pytest.mark.parametrize("cut", [3, 8, -3])
def test_a_secret_split_across_two_output_lines_is_masked_in_both(cut: int) -> None:
    secret = f"split-{uuid.uuid4().hex[:16]}"
    register_secret(secret)
    lines = ["building...", f"token part one: {secret[:cut]}", f"{secret[cut:]} <- part two", "done"]
    streamed = LineRedactor()
    shown = [out for line in lines for out in streamed.feed(line)] + list(streamed.close())
    assert shown == ["building...", "token part one: ***", "*** <- part two", "done"]
    whole = redact("\n".join(lines))
    assert secret[:cut] not in whole and secret[cut:] not in whole


def test_a_secret_whole_on_one_line_is_masked_by_the_line_redactor() -> None:
    secret = f"whole-{uuid.uuid4().hex[:16]}"
    register_secret(secret)
    streamed = LineRedactor()
    shown = [out for line in ("a", f"x {secret} y", "b") for out in streamed.feed(line)] + list(streamed.close())
    assert shown == ["a", "x *** y", "b"]
