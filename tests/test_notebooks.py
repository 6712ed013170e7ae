"""Every notebook in ``notebooks/`` runs: executed with nbclient on a kernel of this interpreter,
against the test fixtures' datasets and the real MLflow server, parameters injected after the
cell tagged ``parameters`` (papermill's convention). Any cell error fails the test. The committed
notebooks carry no outputs or execution counts."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from sparkvision.config import Config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "sparkvision-tests"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kernelspec running this interpreter with this checkout first on the path, found through ``JUPYTER_PATH``."""
    import os

    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sparkvision tests", "language": "python", "env": {"PYTHONPATH": path},
    }))  # fmt: skip
    return str(root)


@pytest.fixture(scope="module")
def latent_vae(spark, cfg: Config, tracking, register_model, celeba_parquet: Path, tmp_path_factory) -> str:
    """A registered VAE (random weights: the notebook's mechanics, not its faces) with its vectors on its run."""
    from sparkvision import latent
    from sparkvision.data import publish
    from sparkvision.models import REGISTRY
    from sparkvision.scoring import batch

    manifest = json.loads((Path(publish.current(celeba_parquet).location.path) / "manifest.json").read_text())
    meta = REGISTRY["vae"].prepare_meta(manifest, cfg.train)
    ref = register_model(REGISTRY["vae"].build(cfg.train, meta).model, "vae", meta,
                         f"notebook-vae-{uuid.uuid4().hex[:6]}", "notebook-tests")  # fmt: skip
    model = batch.resolve_model(spark, ref.uri, tracking)
    vectors, _ = latent.compute_vectors(spark, model, str(celeba_parquet), cfg.score)
    latent.save_vectors(vectors, tmp_path_factory.mktemp("vectors"), tracking, model.run_id)
    return ref.uri


def test_committed_notebooks_are_output_free() -> None:
    import nbformat

    assert {p.name for p in NOTEBOOKS} >= {"explore_dataset.ipynb", "mlflow_runs.ipynb", "latent_space.ipynb"}
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: expected one cell tagged parameters, found {len(tagged)}"


def _execute(path: Path, parameters: dict[str, object], kernel_dir: str, cwd: Path) -> object:
    """Run ``path`` with ``parameters`` assigned in a cell after the one tagged ``parameters``."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    book.cells.insert(at + 1, injected)
    NotebookClient(book, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    return book


@pytest.mark.parametrize("name", ["explore_dataset", "mlflow_runs", "latent_space"])
def test_notebook_runs(name: str, request: pytest.FixtureRequest, kernel: str, celeba_parquet: Path,
                       mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", kernel)
    common = {"ENV": "test", "DATASET": str(celeba_parquet)}
    if name == "explore_dataset":
        parameters: dict[str, object] = common
    elif name == "mlflow_runs":
        request.getfixturevalue("latent_vae")  # at least one run with a registered version
        parameters = {"ENV": "test", "TRACKING_URI": mlflow_server, "EXPERIMENT": "notebook-tests"}
    else:
        parameters = {**common, "TRACKING_URI": mlflow_server, "MODEL_URI": request.getfixturevalue("latent_vae"),
                      "STRENGTHS": [-1.0, 0.0, 1.0]}  # fmt: skip
    book = _execute(ROOT / "notebooks" / f"{name}.ipynb", parameters, kernel, tmp_path)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), name
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    # explore: rows per split, attribute shares, samples; runs: the metric curves; latent: 2 generated
    # grids, the two faces, the per-attribute morph, the combined morph, the interpolation
    wanted = {"explore_dataset": 3, "mlflow_runs": 1, "latent_space": 6}[name]
    assert images == wanted, f"{name}: expected {wanted} pictures, found {images}"
