"""Model registry aliases, registration and the served pyfunc model."""

from __future__ import annotations

import base64
import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from facelens.stages.register import summary
from facelens.tracking.registry import promote, register
from facelens.tracking.runs import tracked_run

CHAMPION, CHALLENGER = "champion", "challenger"

NAME = "facelens-expression"


@pytest.fixture
def mlflow_store(sqlite_store) -> str:
    """A private sqlite tracking store under tmp_path."""
    return sqlite_store("registry-test", registry=True)


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    c = MlflowClient()
    c.create_registered_model(NAME)
    return c


def _new_version(client: MlflowClient) -> str:
    return str(client.create_model_version(NAME, source="file:///nowhere").version)


def _promote(client: MlflowClient, value: float, data: str = "d1", **kw) -> dict:
    version = _new_version(client)
    return promote(
        client,
        NAME,
        version,
        metric_name=kw.pop("metric_name", "val_macro_f1"),
        metric_value=value,
        data_version=data,
        **kw,
    )


def _alias(client: MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias(NAME, alias).version)


def test_first_version_becomes_champion(client) -> None:
    decision = _promote(client, 0.5)
    assert decision["decision"] == "promoted"
    assert decision["reason"] == "no champion yet"
    assert decision["aliases"] == [CHALLENGER, CHAMPION]
    assert decision["champion_version"] == "1"
    assert summary(decision) == f"{NAME} v1 is the new champion (no champion yet)"
    assert _alias(client, CHAMPION) == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["metric"] == "val_macro_f1"
    assert float(tags["metric_value"]) == 0.5
    assert tags["data_version"] == "d1"


def test_worse_version_stays_challenger_better_one_takes_champion(client) -> None:
    _promote(client, 0.5)
    worse = _promote(client, 0.4)
    assert worse["decision"] == "kept"
    assert worse["aliases"] == [CHALLENGER]
    assert summary(worse).startswith(
        f"{NAME} v2 is challenger; champion stays v1 (val_macro_f1=0.4 "
    )
    assert worse["champion_version"] == "1"
    assert worse["champion_metric_value"] == 0.5
    assert _alias(client, CHAMPION) == "1"
    assert _alias(client, CHALLENGER) == "2"

    tie = _promote(client, 0.5)
    assert tie["decision"] == "kept"  # ties keep the champion

    better = _promote(client, 0.6)
    assert better["decision"] == "promoted"
    assert better["previous_champion_version"] == "1"
    assert _alias(client, CHAMPION) == "4"
    assert "beats champion v1" in better["reason"]
    assert client.get_model_version(NAME, "1").aliases == []


def test_lower_is_better(client) -> None:
    _promote(client, 1.0, metric_name="val_loss", higher_is_better=False)
    assert _promote(client, 1.2, metric_name="val_loss", higher_is_better=False)["decision"] == (
        "kept"
    )
    assert _promote(client, 0.8, metric_name="val_loss", higher_is_better=False)["decision"] == (
        "promoted"
    )
    assert _alias(client, CHAMPION) == "3"


def test_new_data_version_takes_champion_even_if_worse(client) -> None:
    _promote(client, 0.9, data="d1")
    decision = _promote(client, 0.1, data="d2")
    assert decision["decision"] == "promoted"
    assert "data version changed" in decision["reason"]
    assert _alias(client, CHAMPION) == "2"


def test_other_metric_is_not_comparable(client) -> None:
    _promote(client, 0.9, metric_name="val_accuracy")
    decision = _promote(client, 0.1, metric_name="val_macro_f1")
    assert decision["decision"] == "promoted"
    assert "metric changed" in decision["reason"]


def test_promote_again_is_idempotent(client) -> None:
    first = _promote(client, 0.5)
    kw = {"metric_name": "val_macro_f1", "metric_value": 0.5, "data_version": "d1"}
    again = promote(client, NAME, first["version"], **kw)
    assert again["decision"] == "kept"
    assert again["champion_version"] == first["version"]
    assert "already the champion" in again["reason"]


def test_non_finite_metric_is_refused(client) -> None:
    version = _new_version(client)
    with pytest.raises(ValueError, match="finite"):
        promote(client, NAME, version, metric_name="m", metric_value=float("nan"), data_version="d")


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input


def test_register_creates_versions_with_tags(mlflow_store) -> None:
    with tracked_run("train"):
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
    first = register(info.model_uri, "facelens-attributes", tags={"data_version": "d1", "n": 3})
    second = register(info.model_uri, "facelens-attributes")
    assert (str(first.version), str(second.version)) == ("1", "2")
    assert MlflowClient().get_model_version("facelens-attributes", "1").tags == {
        "data_version": "d1",
        "n": "3",
    }


def test_register_refuses_odd_names() -> None:
    with pytest.raises(ValueError, match="facelens-expression"):
        register("models:/x", "my model/1")


# ------------------------------------------------------------------ the pyfunc model end to end


def _png(array: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.mark.parametrize("task", ["expression", "attributes"])
def test_pyfunc_roundtrip_with_bad_rows(mlflow_store, tmp_path, task) -> None:
    import torch

    from facelens.constants import ATTRIBUTES, EXPRESSIONS
    from facelens.models.export import export_model
    from facelens.models.meta import ModelMeta
    from facelens.models.vgg import FaceVGG
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.serving.schema import model_signature, output_columns

    names = EXPRESSIONS if task == "expression" else ATTRIBUTES[:3]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FaceVGG("vgg16", num_outputs=len(names), head="pooled", dropout=0.0)
    stats = None
    if task == "attributes":
        stats = ((5.0, 4.0, 6.0), (1.0, 2.0, 0.5))
    meta = ModelMeta.for_model(
        model,
        task=task,
        output_names=names,
        input_size=32,
        weights_source="none",
        norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        target_stats=stats,
    )
    export_model(model, meta, tmp_path / "exported")

    with tracked_run("train"):
        info = log_pyfunc_model(tmp_path / "exported")
    assert info.signature == model_signature(meta)
    assert {p.name for p in info.signature.params.params} == {"explain", "target", "method"}
    version = register(info.model_uri, f"facelens-{task}")

    loaded = mlflow.pyfunc.load_model(f"models:/facelens-{task}/{version.version}")
    rng = np.random.default_rng(0)
    good_a = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    good_b = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "image": [
                _png(good_a),
                "this is not base64!",
                _png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),  # too small
                base64.b64encode(b"GIF89a-not-really").decode(),  # decodes, not an image
                _png(good_b, "JPEG"),
            ]
        }
    )
    out = loaded.predict(frame)

    assert list(out.columns) == output_columns(meta)
    assert len(out) == 5
    assert list(out["error"]) == ["", "invalid_base64", "too_small", out["error"][3], ""]
    assert out["error"][3] in {"unreadable", "truncated", "unsupported_format"}
    assert all(out["message"][i] for i in (1, 2, 3))
    assert out["message"][0] == out["message"][4] == ""
    value_cols = [c for c in output_columns(meta) if c not in ("label", "error", "message")]
    assert out.loc[1, value_cols].isna().all()
    assert all(out.loc[1, c] is None for c in value_cols)  # null in JSON, not NaN

    # Bad rows never change good rows: the same images alone give the same numbers.
    alone = loaded.predict(pd.DataFrame({"image": [_png(good_a)]}))
    np.testing.assert_allclose(
        alone.loc[0, value_cols].astype(float), out.loc[0, value_cols].astype(float), rtol=1e-5
    )
    if task == "expression":
        probs = out.loc[[0, 4], value_cols].astype(float).to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert out.loc[0, "label"] == EXPRESSIONS[int(np.argmax(probs[0]))]
        assert out.loc[1, "label"] == ""
    else:
        # Outputs are de-standardised with the training targets' mean/std (random net ~ 0).
        values = out.loc[0, value_cols].astype(float).to_numpy()
        assert np.all(np.abs(values - np.array([5.0, 4.0, 6.0])) < 3 * np.array([1.0, 2.0, 0.5]))

    explained = loaded.predict(frame, params={"explain": True})
    assert list(explained["error"]) == list(out["error"])
    assert explained.loc[0, "cam_png"] and explained.loc[1, "cam_png"] == ""
