"""The HTML report of a tiny run: it parses, holds every front trial, and renders in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

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


def _chromium() -> str:
    """The Chromium binary; skips without one, except in CI (``CI=true``), where it fails."""
    for name in ("chromium", "chromium-browser", "chromium-headless-shell"):
        found = shutil.which(name)
        if found:
            return found
    why = "no chromium binary on PATH (Debian: apt-get install chromium; .ci/chromium install)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


# Appended to a copy of the page: once plotly has drawn, it records what the browser drew (each
# figure's plot areas, traces with their drawn point counts, legend and y tick labels) and every
# panel's box in page pixels, as JSON the DOM dump carries back.
_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; };
  const text = (root, sel) => [...root.querySelectorAll(sel)].map((t) => t.textContent);
  const figures = [...document.querySelectorAll(".js-plotly-plot")].map((fig) => ({
    box: box(fig), plot_areas: [...fig.querySelectorAll("rect.nsewdrag")].map(box),
    traces: [...fig.querySelectorAll("g.trace")].map((g) => ({
      name: g.__data__ && g.__data__[0] && g.__data__[0].trace ? g.__data__[0].trace.name : null,
      points: g.querySelectorAll("path.point").length})),
    legend: text(fig, "g.legend text.legendtext"), yticks: text(fig, "g.ytick text")}));
  const probe = document.createElement("script");
  probe.type = "application/json"; probe.id = "probe";
  probe.textContent = JSON.stringify({figures, panels: [...document.querySelectorAll(
    "ul, .js-plotly-plot, table")].map(box)});
  document.body.append(probe);
}, 500));
</script>"""
_WINDOW = (1300, 2400)  # taller than the tiny run's page, so one screenshot holds every panel


def _render(browser: str, page: Path, folder: Path) -> tuple[str, dict[str, Any], np.ndarray]:
    """(the DOM after scripts ran, the probe's record, the screenshot as an RGB array)."""
    probed = folder / "probed.html"
    probed.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    shot = folder / "report.png"
    run = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={folder / 'profile'}",
         "--force-device-scale-factor=1", f"--window-size={_WINDOW[0]},{_WINDOW[1]}",
         "--virtual-time-budget=10000", f"--screenshot={shot}", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert run.returncode == 0 and shot.exists(), f"chromium failed:\n{run.stderr[-3000:]}"
    found = re.search(r'<script type="application/json" id="probe">(.*?)</script>', run.stdout, re.S)
    assert found, "the probe did not run: the page's scripts stopped before load"
    return run.stdout, json.loads(found.group(1)), np.asarray(Image.open(shot).convert("RGB"))


def _crop(image: np.ndarray, box: list[float]) -> np.ndarray:
    x, y, w, h = (round(v) for v in box)
    assert w > 0 and h > 0 and x + w <= image.shape[1] and y + h <= image.shape[0], \
        f"panel {box} is not inside the {image.shape[1]}x{image.shape[0]} screenshot"
    return image[y:y + h, x:x + w]


def _pixels_near(area: np.ndarray, rgb: str, tol: int = 10) -> int:
    target = np.array([int(rgb[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(area.astype(int) - target) <= tol).all(axis=-1).sum())


def test_every_panel_draws_in_headless_chromium(page: Path, tiny_run: Path, tmp_path: Path) -> None:
    browser = _chromium()
    dom, probe, image = _render(browser, page, tmp_path)
    front = sorted(int(n) for n in pd.read_csv(tiny_run / "pareto.csv")["number"])
    # plotly draws each figure into an <svg class="main-svg">; the page source holds none
    assert 'class="main-svg"' not in page.read_text() and 'class="main-svg"' in dom
    assert f"Pareto front ({len(front)} trials)" in dom

    pareto, heatmap = probe["figures"]  # the accuracy-against-cost plots, then the heatmap
    assert len(pareto["plot_areas"]) == 3  # params, FLOPs, latency
    assert [t["points"] for t in pareto["traces"] if t["name"] == "Pareto front"] == [len(front)] * 3
    assert pareto["legend"] == ["trials", "Pareto front", "baseline"]
    assert sorted(heatmap["yticks"]) == sorted(f"trial {n}" for n in front)

    # every panel (summary, the two figures, the two tables) has something drawn in it
    assert len(probe["panels"]) == 5
    for box in probe["panels"]:
        area = _crop(image, box)
        assert (area < 250).any(axis=-1).mean() > 0.005, f"panel {box} is blank"
    for box in pareto["plot_areas"]:  # each plot shows the front (blue) and the baseline (red star)
        area = _crop(image, box)
        assert _pixels_near(area, "#1f77b4") > 50 and _pixels_near(area, "#d62728") > 50, box
    heat = _crop(image, heatmap["plot_areas"][0])
    assert (heat < 250).any(axis=-1).mean() > 0.5, "the heatmap's cells are not filled"


def test_cli_report_html_to_a_path_it_cannot_write(tiny_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["report", str(run), "--html", str(blocker / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--html" in err[0] and "is a file" in err[0], err
