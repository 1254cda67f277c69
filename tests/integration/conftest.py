"""Fixtures of the ``facelens`` CLI tests: a private MLflow store with a tiny logged model,
the CLI pointed at it from an empty folder, and a SynthFACS face PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from PIL import Image

NAME = "facelens-expression"


class Store:
    def __init__(self, uri: str, run_id: str, root: Path) -> None:
        self.uri = uri
        self.run_id = run_id
        self.root = root


@pytest.fixture(scope="module")
def cli_store(
    tmp_path_factory: pytest.TempPathFactory, export_tiny_model: Callable[[Path], Path]
) -> Store:
    from mlflow import MlflowClient

    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register
    from facelens.tracking.runs import configure, tracked_run

    root = tmp_path_factory.mktemp("cli-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        configure(None, "cli-test", artifact_location=str(root / "artifacts"))
        with tracked_run("train tiny") as run:
            info = log_pyfunc_model(export_tiny_model(root))
            mlflow.log_metrics({"best_val_metric": 0.25, "test_macro_f1": 0.125})
        version = register(info.model_uri, NAME)
        MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", version.version)
    return Store(uri, run.info.run_id, root)


@pytest.fixture
def cli_env(cli_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Point the CLI at the module's store and run it in an empty folder."""
    import facelens.cli.console as console

    monkeypatch.setenv("MLFLOW_TRACKING_URI", cli_store.uri)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console.out, "_width", 250)  # tables are not squeezed to 80 columns
    return cli_store


@pytest.fixture(scope="module")
def synth_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facelens.data.synthfacs.generate import generate
    from facelens.data.synthfacs.params import SynthParams

    sample = generate(SynthParams(n_identities=1, seed=3), image_size=48).samples[3]
    path = tmp_path_factory.mktemp("synth") / "synth_face.png"
    Image.fromarray(sample.image).save(path)
    return path
