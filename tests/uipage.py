"""A Prefect UI page as a person sees it: headless Chromium renders it (the same flags as
docs/deployments-and-ci.md's check), keeps a PNG for whoever reads the test's output, and hands back
the text of the rendered DOM that shows without hovering: scripts, styles and tooltips left out."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1100", "--virtual-time-budget=15000"]


class _VisibleText(HTMLParser):
    """Text outside <title>, <script>, <style> and tooltips (role="tooltip", or a class naming one: shown on hover)."""

    HIDDEN_TAGS = {"title", "script", "style", "template", "noscript"}  # <title>: the browser tab, not the page
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open element: is it hidden?
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        values = dict(attrs)
        hidden = (
            tag in self.HIDDEN_TAGS
            or values.get("role") == "tooltip"
            or "tooltip" in (values.get("class") or "").lower()
            or values.get("aria-hidden") == "true"
        )
        self.stack.append(hidden)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not any(self.stack) and data.strip():
            self.parts.append(data.strip())


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run installs it)")
    return found


def rendered_text(url: str, screenshot: Path) -> str:
    """The page at ``url`` as Chromium renders it: its visible text, one line per text node; the
    screenshot is written to ``screenshot`` (a test artifact under tmp_path)."""
    browser = chromium()
    subprocess.run(
        [browser, *CHROMIUM, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True
    )
    dom = subprocess.run([browser, *CHROMIUM, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _VisibleText()
    parser.feed(dom.stdout)
    return "\n".join(parser.parts)
