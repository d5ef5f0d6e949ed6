"""A real browser for the report page: headless Chromium (Debian's chromium package, installed by
scripts/setup.sh --export) opens a file from disk and gives back the DOM its scripts rendered, its console errors
and a screenshot."""

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ARTEFACTS = Path(__file__).resolve().parent.parent / "outputs" / "test-artefacts"  # screenshots the tests keep
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    """The browser; the tests that need it are skipped without it, except in CI, where its absence fails."""
    found = shutil.which("chromium")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/setup.sh --export installs it")
        pytest.skip("chromium is not installed (bash scripts/setup.sh --export installs it)")
    return found


@dataclass
class Page:
    dom: str
    console_errors: list
    body: dict = field(default_factory=dict)  # the <body>'s attributes (data-ready, data-shown, data-errors)
    examples: dict = field(default_factory=dict)  # k -> [(token id, trained, title), ...]
    ids: dict = field(default_factory=dict)  # element id -> its text


def open_page(path: Path, fragment: str = "") -> Page:
    """The page as the browser rendered it (file://path#fragment)."""
    url = path.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    result = subprocess.run([chromium(), *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    page = Page(result.stdout, errors)
    _Reader(page).feed(result.stdout)
    return page


def screenshot(path: Path, name: str, fragment: str = "") -> Path:
    """A screenshot of the page, kept in outputs/test-artefacts/."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTEFACTS / f"{name}.png"
    subprocess.run([chromium(), *FLAGS, f"--screenshot={out}", "--window-size=1280,2400",
                    path.resolve().as_uri() + (f"#{fragment}" if fragment else "")],
                   capture_output=True, timeout=120, check=True)
    assert out.stat().st_size > 10_000
    return out


class _Reader(HTMLParser):
    """Reads the rendered examples (div.ex[data-k] holding span.tok[data-id]) and the text of elements with ids."""

    def __init__(self, page: Page):
        super().__init__()
        self.page, self.example, self.open_ids = page, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.page.body = a
        if tag == "div" and "ex" in classes:
            self.example = int(a["data-k"])
            self.page.examples[self.example] = []
        if tag == "span" and "tok" in classes:
            self.page.examples[self.example].append((int(a["data-id"]), "tr" in classes, a.get("title", "")))
        if a.get("id") and tag not in ("input", "br", "img", "meta"):  # void elements hold no text
            self.open_ids.append([a["id"], tag, 0])
            self.page.ids[a["id"]] = ""
        for entry in self.open_ids:
            entry[2] += entry[1] == tag

    def handle_endtag(self, tag):
        for entry in self.open_ids:
            entry[2] -= entry[1] == tag
        self.open_ids = [e for e in self.open_ids if e[2] > 0]

    def handle_data(self, data):
        for name, _, _ in self.open_ids:
            self.page.ids[name] += data
