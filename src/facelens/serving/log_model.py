"""Log an exported model as an MLflow pyfunc that ``mlflow models serve`` can serve.

The model is logged "from code": MLflow stores a three-line script that builds
:class:`~facelens.serving.pyfunc.FaceLensModel` instead of a pickled object, so loading it
unpickles nothing. The facelens code the served model runs travels with it: exactly the
import closure of :mod:`facelens.serving.pyfunc` (:func:`model_code_files`), which is also
what the ``train`` stage depends on in ``dvc.yaml``.
"""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models.model import ModelInfo

from facelens._closure import SRC_ROOT, closure
from facelens.errors import MissingInputError
from facelens.models.meta import ModelMeta
from facelens.serving.pyfunc import FaceLensModel
from facelens.serving.schema import model_signature

__all__ = ["ENTRY_MODULE", "SERVING_REQUIREMENTS", "log_pyfunc_model", "model_code_files"]

#: The module whose class the logged model's entry script instantiates (imported above, so the
#: code the served model runs is in the import closure of whatever logs it: the train stage).
ENTRY_MODULE = FaceLensModel.__module__
#: Distributions the served model imports (facelens itself travels as code).
SERVING_REQUIREMENTS: tuple[str, ...] = (
    "mlflow",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pillow",
    "pydantic",
    "pyyaml",
)


_ENTRY_SCRIPT = """\
import mlflow

from facelens.serving.pyfunc import FaceLensModel

mlflow.models.set_model(FaceLensModel())
"""


def model_code_files() -> list[Path]:
    """The facelens files a served model runs (relative to the source root), sorted."""
    entry = SRC_ROOT / (ENTRY_MODULE.replace(".", "/") + ".py")
    return sorted(closure([entry]))


def _pinned(packages: Sequence[str]) -> list[str]:
    out = []
    for package in packages:
        try:
            version = metadata.version(package).split("+", 1)[0]  # drop "+cpu" local tags
        except metadata.PackageNotFoundError:
            out.append(package)
        else:
            out.append(f"{package}=={version}")
    return out


def _example_frame(input_size: int) -> Any:
    import pandas as pd
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (input_size, input_size), (128, 128, 128)).save(buf, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode("ascii")]})


def log_pyfunc_model(
    model_dir: Path,
    *,
    name: str = "model",
    input_example: Any = None,
    signature: Any = None,
    model_config: Mapping[str, Any] | None = None,
    extra_pip_requirements: Sequence[str] = (),
) -> ModelInfo:
    """Log an exported model directory as an MLflow pyfunc in the active run.

    The model is logged "from code" (a three-line script that builds
    :class:`~facelens.serving.pyfunc.FaceLensModel`; nothing is pickled), the facelens code
    it runs is shipped with it (``code_paths``: :func:`model_code_files`) and the serving
    dependencies are pinned to
    the installed versions, so it loads with ``mlflow.pyfunc.load_model`` and serves with
    ``mlflow models serve``.

    Args:
        model_dir: the directory written by ``export_model`` (``state_dict.pt``, ``meta.json``).
        name: the logged model's name in the run.
        input_example: a DataFrame with an ``image`` column; default: one grey PNG.
        signature: an MLflow signature; default: :func:`~facelens.serving.schema.model_signature`.
        model_config: decoder limits / batch size for :class:`FaceLensModel`.
        extra_pip_requirements: more requirement specifiers to record.

    Returns:
        The :class:`mlflow.models.model.ModelInfo` (``model_uri`` is what :func:`register` takes).

    Raises:
        MissingInputError: ``model_dir`` is not an exported model.
    """
    model_dir = Path(model_dir)
    meta_file = model_dir / "meta.json"
    if not (meta_file.is_file() and (model_dir / "state_dict.pt").is_file()):
        raise MissingInputError(
            f"{model_dir} is not an exported facelens model (needs meta.json and "
            "state_dict.pt); pass the directory written by the train stage"
        )
    meta = ModelMeta.from_json(meta_file.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        # "Models from code": MLflow stores this script instead of a pickled object, so
        # loading the model runs no unpickling (safer, and robust to class changes).
        entry = Path(tmp) / "facelens_model.py"
        entry.write_text(_ENTRY_SCRIPT)
        code = Path(tmp) / "code"
        for rel in model_code_files():
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SRC_ROOT / rel, code / rel)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(code / "facelens")],
            pip_requirements=[*_pinned(SERVING_REQUIREMENTS), *extra_pip_requirements],
            signature=signature if signature is not None else model_signature(meta),
            input_example=input_example
            if input_example is not None
            else _example_frame(meta.input_size),
            model_config=dict(model_config) if model_config else None,
        )
