"""What a cold ``facelens`` command loads, and that ``models:/name@alias`` is looked up on every
call: guards of the CLI's start-up time that time nothing (benchmarks/cli_latency.py times it).

The import checks run the command in a fresh interpreter (a subprocess) and read its
``sys.modules``; a tiny VGG16 is logged and registered once per module in a private store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

import facelens
from facelens.cli.app import app
from facelens.constants import EXPRESSIONS

NAME = "facelens-expression"
SRC = Path(facelens.__file__).resolve().parents[1]
#: Libraries that neither predict nor loading the model needs (training, tuning, pipelines,
#: plots, manifolds, CAMs); torchvision comes with torch._dynamo (about a second).
NOT_FOR_PREDICT = (
    "torchvision",
    "torch._dynamo",
    "pytorch_grad_cam",
    "sklearn",
    "matplotlib",
    "umap",
    "cv2",
    "optuna",
    "dvc",
    "plotly",
)
#: Libraries that importing the CLI (``--help``, argument errors) must not need.
NOT_FOR_THE_CLI = ("mlflow", "torch", "pandas", "numpy", "PIL", "scipy", *NOT_FOR_PREDICT)

_REPORT = """
import json, sys
{body}
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def _modules_after(body: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``body``."""
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _REPORT.format(body=body)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules)


def _export(root: Path, seed: int) -> Path:
    """A random 32-px VGG16 expression model exported to ``root``."""
    from facelens.models.build import build_model
    from facelens.models.export import export_model
    from facelens.models.meta import ModelMeta
    from facelens.models.params import ModelParams

    model, source = build_model(
        ModelParams(arch="vgg16", weights="none", input_size=32), num_outputs=7, seed=seed
    )
    meta = ModelMeta.for_model(
        model, task="expression", output_names=EXPRESSIONS, input_size=32, weights_source=source
    )
    export_model(model, meta, root)
    return root


def _log_and_register(root: Path, seed: int) -> str:
    """Log an exported model the way the train stage does and register it; its version."""
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register
    from facelens.tracking.runs import tracked_run

    with tracked_run(f"train seed {seed}"):
        info = log_pyfunc_model(_export(root / f"exported-{seed}", seed))
    return str(register(info.model_uri, NAME).version)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facelens.data.synthfacs.generate import generate
    from facelens.data.synthfacs.params import SynthParams

    sample = generate(SynthParams(n_identities=1, seed=3), image_size=48).samples[3]
    path = tmp_path_factory.mktemp("startup") / "face.png"
    Image.fromarray(sample.image).save(path)
    return path


@pytest.fixture(scope="module")
def champion_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite store with one registered version holding the ``champion`` alias; its URI."""
    from facelens.tracking.runs import configure

    root = tmp_path_factory.mktemp("startup-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        configure(None, "startup-test", artifact_location=str(root / "artifacts"))
        version = _log_and_register(root, seed=0)
        MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", version)
    return uri


def test_importing_the_cli_loads_no_heavy_library():
    loaded = _modules_after("import facelens.cli.app")
    assert "facelens.cli.predict" in loaded
    assert _loaded(loaded, NOT_FOR_THE_CLI) == []


def test_predict_loads_only_what_serving_the_model_needs(champion_store, image, tmp_path):
    body = (
        "from facelens.cli.app import app\n"
        f"app(['predict', {str(image)!r}, '--model', 'models:/{NAME}@champion', '--json'], "
        "standalone_mode=False)"
    )
    loaded = _modules_after(body, {"MLFLOW_TRACKING_URI": champion_store})
    assert {"mlflow.pyfunc", "torch", "facelens.serving.pyfunc"} <= loaded  # it did load it
    assert _loaded(loaded, NOT_FOR_PREDICT) == []


def _probabilities(args: list[str]) -> np.ndarray:
    result = CliRunner().invoke(app, ["predict", *args, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    return np.array([row[f"p_{name}"] for name in EXPRESSIONS])


def test_predict_resolves_the_alias_on_every_call(
    sqlite_store: Callable[..., str], image: Path, tmp_path: Path
):
    sqlite_store("alias-test", registry=True)
    client = MlflowClient()
    first = _log_and_register(tmp_path, seed=0)
    client.set_registered_model_alias(NAME, "champion", first)
    before = _probabilities([str(image), "--model", f"models:/{NAME}@champion"])
    second = _log_and_register(tmp_path, seed=1)
    client.set_registered_model_alias(NAME, "champion", second)
    after = _probabilities([str(image), "--model", f"models:/{NAME}@champion"])
    np.testing.assert_allclose(
        before, _probabilities([str(image), "-m", f"models:/{NAME}/{first}"])
    )
    np.testing.assert_allclose(
        after, _probabilities([str(image), "-m", f"models:/{NAME}/{second}"])
    )
    assert not np.allclose(before, after)


def _console(args: list[str], uri: str, prelude: str = "") -> subprocess.CompletedProcess:
    """``facelens ARGS`` as the console script runs it (``app()``), in a fresh interpreter."""
    environ = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), environ.get("PYTHONPATH")]))
    code = (
        f"{prelude}\nimport sys\nfrom facelens.cli.app import app\nsys.argv[0] = 'facelens'\napp()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=240,
    )


def test_the_console_script_keeps_exit_codes_output_and_exit_handlers(
    champion_store, image, tmp_path
):
    model = ["--model", f"models:/{NAME}@champion"]
    done = _console(["predict", str(image), *model, "--json"], champion_store)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["label"] in EXPRESSIONS and record["error"] == ""
    done = _console(["predict", str(tmp_path / "missing.png"), *model], champion_store)
    assert done.returncode == 1 and "missing.png: no such file" in done.stderr
    done = _console(["predict", str(image), "--task", "age"], champion_store)
    assert done.returncode == 2 and "expression" in done.stderr
    cam = tmp_path / "figures" / "cam.png"
    done = _console(["explain", str(image), *model, "--out", str(cam)], champion_store)
    assert done.returncode == 0, done.stderr
    assert "explained" in done.stdout and "cam.png" in done.stdout
    with Image.open(cam) as written:
        assert written.size[0] > 0
    # a run's model is downloaded into a folder removed at exit (MLflow's default never is)
    run_id = MlflowClient(tracking_uri=champion_store).get_model_version(NAME, "1").run_id
    done = _console(["predict", str(image), "--model", run_id, "--json"], champion_store)
    assert done.returncode == 0, done.stderr
    assert not list(Path(tempfile.gettempdir()).rglob("MLmodel"))
    prelude = "import atexit\natexit.register(print, 'exit handler ran')"
    done = _console(["--version"], champion_store, prelude)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "exit handler ran"
