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


def _streamed(lines: list[str]) -> list[str]:
    redactor = LineRedactor()
    return [out for line in lines for out in redactor.feed(line)] + list(redactor.close())


@pytest.mark.case(
    "secret",
    "output prints base64 of a whole environment dump (the secret at byte offset 0, 1 or 2 of the stream)",
    "the stable inner part of the secret's encoding is masked at every offset, standard and URL-safe",
)
@pytest.mark.parametrize("alphabet", ["standard", "url-safe"])
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_base64_of_a_stream_holding_a_secret_is_masked_at_every_offset(offset: int, alphabet: str) -> None:
    secret = f"wf-b64-{uuid.uuid4().hex}"
    register_secret(secret)
    encode = base64.b64encode if alphabet == "standard" else base64.urlsafe_b64encode
    dump = (
        b"HOME=/root\n" + b"X" * ((offset - 11) % 3) + f"WHEELFLOW_STAGING_PASSWORD={secret}\nPATH=/usr/bin\n".encode()
    )
    start = dump.index(secret.encode())
    assert start % 3 == offset
    encoded = encode(dump).decode()
    shown = redact(f"env: {encoded}")
    assert "***" in shown
    # What is left around the mask decodes (the mask covers whole 3-byte groups) to at most the two
    # bytes at each end of the secret that share a group with their neighbours.
    decoded = [encode_back(part) for part in shown.removeprefix("env: ").split("***")]
    assert decoded[0].startswith(b"HOME=/root\n")
    for window in (secret[i : i + 3] for i in range(2, len(secret) - 4)):
        assert all(window.encode() not in d for d in decoded), (window, decoded)


def encode_back(part: str) -> bytes:
    whole = part[: len(part) // 4 * 4]
    return base64.b64decode(whole.replace("-", "+").replace("_", "/"))


@pytest.mark.case(
    "secret",
    "output prints a secret base32-encoded, alone or inside a longer base32 stream at any offset",
    "masked as *** (the stable inner part inside a stream)",
)
@pytest.mark.parametrize("offset", [None, 0, 1, 2, 3, 4])
def test_base32_of_a_secret_is_masked(offset: int | None) -> None:
    secret = f"wf-b32-{uuid.uuid4().hex}"
    register_secret(secret)
    if offset is None:
        assert redact(f"x {base64.b32encode(secret.encode()).decode()} y") == "x *** y"
        return
    stream = b"A" * offset + secret.encode() + b"tail of the stream"
    shown = redact(base64.b32encode(stream).decode())
    assert "***" in shown
    whole_groups = secret.encode()[(5 - offset) % 5 :]
    assert base64.b32encode(whole_groups[: len(whole_groups) // 5 * 5]).decode() not in shown


@pytest.mark.case(
    "secret",
    "a secret printed in 3 pieces on 3 lines, or in 2-3 pieces with other lines between, anywhere in each line",
    "each piece masked, in a streamed log (lines held back a few) and in a whole text",
)
@pytest.mark.parametrize(
    "layout",
    ["3 consecutive lines", "2 lines, 1 between", "2 lines, 3 between", "3 lines, lines between", "mid-line pieces"],
)
def test_a_secret_split_over_up_to_three_lines_with_lines_between_is_masked(layout: str) -> None:
    secret = f"split-{uuid.uuid4().hex[:20]}"
    register_secret(secret)
    a, b, c = secret[:7], secret[7:15], secret[15:]
    lines = {
        "3 consecutive lines": ["start", a, b, c, "end"],
        "2 lines, 1 between": ["start", f"one: {secret[:12]}", "noise", f"{secret[12:]} two", "end"],
        "2 lines, 3 between": [f"one: {secret[:12]}", "n1", "n2", "n3", f"{secret[12:]}", "end"],
        "3 lines, lines between": [f"x {a}", "noise", f"y {b}", "more noise", f"z {c}", "end"],
        "mid-line pieces": [f"a [{a}] b", f"c [{b}] d", "noise", f"e [{c}] f"],
    }[layout]
    for shown in (_streamed(lines), redact("\n".join(lines)).split("\n")):
        assert len(shown) == len(lines)
        text = "\n".join(shown)
        assert [secret[i : i + 4] for i in range(len(secret) - 3) if secret[i : i + 4] in text] == [], shown
        assert [line for line in shown if "noise" in line or line.startswith("n")] == [
            line for line in lines if "noise" in line or line.startswith("n")
        ]


@pytest.mark.case(
    "secret",
    "a short secret (6 characters) and ordinary words on nearby lines",
    "no false mask: pieces anywhere in a line are looked for only in secrets of 10 characters or more",
)
def test_short_secrets_do_not_mask_ordinary_words_on_nearby_lines() -> None:
    rest = uuid.uuid4().hex[:3]
    register_secret(f"sec{rest}")  # both pieces are on the lines below, each inside other text
    lines = ["it took 2.3 seconds", f"return code {rest}-0", "retrying in 3s", "done"]
    assert _streamed(lines) == lines
    assert redact("\n".join(lines)) == "\n".join(lines)


def test_the_line_redactor_holds_back_no_more_than_a_few_lines() -> None:
    from wheelflow.core.redaction import SPLIT_WINDOW

    redactor = LineRedactor()
    shown = [out for i in range(10) for out in redactor.feed(f"line {i}")]
    assert shown == [f"line {i}" for i in range(10 - (SPLIT_WINDOW - 1))]
    assert list(redactor.close()) == [f"line {i}" for i in range(10 - (SPLIT_WINDOW - 1), 10)]
