"""notebooks/incident.ipynb runs top to bottom and shows what its text says.

``python -m tests.test_notebook`` executes it and stores the fresh outputs in the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "incident.ipynb"


def execute(path: Path = NOTEBOOK, tmpdir: Path | None = None) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel started in the notebook's directory; raise
    ``nbclient.exceptions.CellExecutionError`` (naming the cell) on the first error.
    ``tmpdir``: where the kernel's temporary files (the notebook's outputs) go."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    # The kernel imports this checkout's analyzer, whatever nicpath is installed.
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    client.execute(env=env)
    return nb


def text_of(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def test_notebook_runs_top_to_bottom(tmp_path):
    nb = execute(tmpdir=tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    shown = "\n".join(text_of(c) for c in code)
    for kind in ("egress_change", "src_not_on_nic", "asymmetric_return"):
        assert kind in shown
    assert "first packet on eth1 0.088 s after the route was added" in shown  # as the text says
    assert "cards of outgoing packets after the change: ['eth1']" in shown
    assert "cards of incoming packets after the change: ['eth2']" in shown
    bundles = len(list((ROOT / "samples").glob("*/scenario.json")))
    assert f"{bundles} bundles, 0 failed, exit code 1" in shown
    assert "filter/OUTPUT eth1" in shown  # the DuckDB pivot
    picture = code[-1].outputs[-1]["data"]
    assert picture["image/png"]  # the flow drawn as a PNG


if __name__ == "__main__":
    nbformat.write(execute(), NOTEBOOK)
    print(f"executed {NOTEBOOK.relative_to(ROOT)}", file=sys.stderr)
