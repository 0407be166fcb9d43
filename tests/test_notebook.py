"""notebooks/choose_model.ipynb runs top to bottom against a tiny run and is committed clean."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "choose_model.ipynb"


def test_notebook_is_committed_with_outputs_cleared() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])


def test_notebook_runs_and_exports(tiny_run: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "chosen"
    monkeypatch.setenv("AUTORANK_RUN", str(tiny_run))
    monkeypatch.setenv("AUTORANK_EXPORT_DIR", str(out))
    monkeypatch.setenv("AUTORANK_MAX_DROP", "1.0")  # every front model qualifies: take the smallest
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    info = json.loads((out / "export.json").read_text())
    front = pd.read_csv(tiny_run / "pareto.csv").sort_values("params")["number"].tolist()
    assert info["trial"] == front[0]
    assert (out / "model.onnx").exists()
    shown = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
    assert f"trial {front[0]}:" in shown
