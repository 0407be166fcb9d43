"""The HTML report of a tiny run: it parses, holds every front trial, and renders in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import autorank as ar
from autorank.cli import main
from autorank.sweep.html_report import plan_matrix, write_html


class _Page(HTMLParser):
    """Collects the page's text, its table cells, scripts (inline and by src) and the front list."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.script_srcs: list[str] = []
        self.inline_js = 0
        self.front: list[int] | None = None
        self._tag: str | None = None
        self._attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag, self._attrs = tag, dict(attrs)
        if tag == "script" and self._attrs.get("src"):
            self.script_srcs.append(str(self._attrs["src"]))

    def handle_data(self, data: str) -> None:
        if self._tag == "td":
            self.cells.append(data.strip())
        elif self._tag == "script" and self._attrs.get("id") == "front-trials":
            self.front = json.loads(data)
        elif self._tag == "script":
            self.inline_js += len(data)

    def handle_endtag(self, tag: str) -> None:
        self._tag = None


@pytest.fixture(scope="module")
def page(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_html(ar.load_run(tiny_run), tmp_path_factory.mktemp("html") / "report.html")


def test_html_parses_and_holds_every_front_trial(page: Path, tiny_run: Path) -> None:
    parser = _Page()
    parser.feed(page.read_text())
    parser.close()
    front = sorted(int(n) for n in pd.read_csv(tiny_run / "pareto.csv")["number"])
    assert front and sorted(parser.front) == front
    for n in front:
        assert str(n) in parser.cells
    assert parser.script_srcs == [], "self-contained: no script loaded from elsewhere"
    assert parser.inline_js > 1_000_000, "plotly.js is inlined"


def test_heatmap_rows_follow_the_front(tiny_run: Path) -> None:
    front = ar.load_run(tiny_run).pareto()
    labels, layers, cells = plan_matrix(front)
    assert len(labels) == len(front) and all(len(row) == len(layers) for row in cells)


def test_cli_report_html(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["report", str(run), "--html"]) == 0
    assert (run / "report.html").stat().st_size > 1_000_000
    assert main(["report", str(run), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "chromium-headless-shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_plot_renders_in_headless_chromium(page: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    # plotly draws each figure into an <svg class="main-svg">; the page source holds none
    assert 'class="main-svg"' not in page.read_text()
    assert 'class="main-svg"' in dom
