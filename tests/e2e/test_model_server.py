"""The real ``mlflow models serve`` process serving a registered facelens model.

A tiny random VGG16 is exported, logged with ``log_pyfunc_model``, registered and aliased
``champion`` in a private sqlite store; then ``mlflow models serve -m
models:/facelens-expression@champion --env-manager local`` is started as a subprocess and
exercised over HTTP with valid and hostile payloads.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelens.constants import EXPRESSIONS

pytestmark = pytest.mark.slow

NAME = "facelens-expression"
_START_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    log: Path
    pid: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _register_champion(root: Path, uri: str, export: Callable[[Path], Path]) -> None:
    from mlflow import MlflowClient

    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register
    from facelens.tracking.runs import configure, tracked_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        configure(None, "e2e-serving", artifact_location=str(root / "artifacts"))
        with tracked_run("train"):
            info = log_pyfunc_model(export(root))
        version = register(info.model_uri, NAME)
        MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", version.version)


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _post(server: Server, body: object, timeout: float = 120.0) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server.url}/invocations", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, export_tiny_model: Callable[[Path], Path]
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _register_champion(root, uri, export_tiny_model)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn and mlflow live beside the interpreter
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
    }
    log = root / "server.log"
    cmd = [
        str(Path(bin_dir) / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, env=env, cwd=root, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _get(f"{url}/ping", timeout=2.0) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /ping after {_START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url=url, log=log, pid=proc.pid)
    finally:
        # The CLI starts uvicorn as a child: end the whole session group we created.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _png(img: np.ndarray | Image.Image, fmt: str = "PNG", **kw: object) -> str:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kw)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _face(seed: int, h: int = 40, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(blocks).resize((w, h), Image.Resampling.BILINEAR))


def _split(*values: object, **params: object) -> dict:
    body: dict = {"dataframe_split": {"columns": ["image"], "data": [[v] for v in values]}}
    if params:
        body["params"] = params
    return body


def _probs(row: dict) -> np.ndarray:
    return np.array([row[f"p_{n}"] for n in EXPRESSIONS], dtype=float)


def test_ping_is_healthy(server):
    assert _get(f"{server.url}/ping") == 200


def test_valid_and_hostile_rows_in_one_request(server, png_bomb):
    good = _png(_face(1))
    raw = base64.b64decode(good)
    frames = [Image.fromarray(_face(2 + i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    hostile = [
        ("not base64 at all!", "invalid_base64"),
        (None, "missing_image"),
        (base64.b64encode(b"plain text, no image").decode(), "unsupported_format"),
        (base64.b64encode(raw[: len(raw) // 2]).decode(), "truncated"),
        (base64.b64encode(png_bomb(30_000, 30_000)).decode(), "too_large"),
        (_png(_face(9, 8, 8)), "too_small"),
        (base64.b64encode(buf.getvalue()).decode(), "multi_frame"),
    ]
    values = [good, *(v for v, _ in hostile), good]
    status, text = _post(server, _split(*values, explain=True))
    assert status == 200, text[:500]
    rows = json.loads(text)["predictions"]
    assert [r["error"] for r in rows] == ["", *(c for _, c in hostile), ""]
    for row, value in zip(rows[1:-1], values[1:-1], strict=True):
        assert row["message"] and "Traceback" not in row["message"]
        assert row["p_happy"] is None and row["cam_png"] == ""
        if isinstance(value, str):
            assert value[:16] not in row["message"]
    for row in (rows[0], rows[-1]):
        np.testing.assert_allclose(_probs(row).sum(), 1.0, rtol=1e-6)
        assert row["label"] == EXPRESSIONS[int(np.argmax(_probs(row)))]
        assert row["cam_target"] == row["label"] and row["cam_method"] == "gradcam"
        with Image.open(io.BytesIO(base64.b64decode(row["cam_png"]))) as im:
            assert im.format == "PNG" and im.size == (40, 40)
    assert rows[0] == rows[-1]
    assert _get(f"{server.url}/ping") == 200


def test_odd_modes_are_predicted_like_rgb(server):
    rgb = _face(20, 36, 36)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    pal = Image.fromarray(rgb).quantize(colors=16)
    cases = [
        (_png(gray), _png(np.repeat(gray[..., None], 3, 2))),
        (_png(pal), _png(pal.convert("RGB"))),
        (_png(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])), _png(rgb)),
        (_png(cmyk, "TIFF"), _png(cmyk.convert("RGB"))),
        (_png(gray.astype(np.uint16) * 257), _png(np.repeat(gray[..., None], 3, 2))),
    ]
    values = [v for pair in cases for v in pair]
    status, text = _post(server, _split(*values))
    assert status == 200, text[:500]
    rows = json.loads(text)["predictions"]
    assert [r["error"] for r in rows] == [""] * len(values), [r["message"] for r in rows]
    for k in range(len(cases)):
        np.testing.assert_allclose(_probs(rows[2 * k]), _probs(rows[2 * k + 1]), atol=1e-7)


def test_named_target_method_and_records_format(server):
    body = {
        "dataframe_records": [{"image": _png(_face(30))}],
        "params": {"explain": True, "target": "-sad", "method": "gradcam++"},
    }
    status, text = _post(server, body)
    assert status == 200, text[:500]
    row = json.loads(text)["predictions"][0]
    assert (row["error"], row["cam_target"], row["cam_method"]) == ("", "-sad", "gradcam++")


_BAD_PARAMS = [
    ({"explain": True, "target": "smug"}, "unknown_target", "'target'", "surprise"),
    ({"method": "bogus"}, "unknown_method", "'method'", "gradcam++"),  # without explain
    ({"explain": True, "method": "nope"}, "unknown_method", "'method'", "scorecam"),
    ({"colour": "red"}, "unknown_param", "'colour'", "explain, target, method"),
    ({"explain": True, "colour": "red"}, "unknown_param", "'colour'", "explain, target, method"),
]


def test_bad_params_get_a_400_naming_the_param_and_what_is_allowed(server):
    good = _png(_face(40, 16, 16))
    for params, code, name, allowed in _BAD_PARAMS:
        status, text = _post(server, _split(good, good, **params))
        assert status == 400, (params, text[:500])
        body = json.loads(text)
        assert set(body) == {"error_code", "error", "message"}
        assert (body["error_code"], body["error"]) == ("INVALID_PARAMETER_VALUE", code)
        assert name in body["message"] and allowed in body["message"]
        assert good[:16] not in text and "Traceback" not in text  # the input is not echoed
        assert "smug" not in text and "bogus" not in text
    status, text = _post(server, _split(good, explain=True, target="-sad", method="gradcam++"))
    assert status == 200 and json.loads(text)["predictions"][0]["error"] == ""
    assert _get(f"{server.url}/ping") == 200


def test_too_many_rows_are_answered_per_row(server):
    good = _png(_face(41, 16, 16))
    status, text = _post(server, _split(*[good] * 65))
    assert status == 200
    rows = json.loads(text)["predictions"]
    assert len(rows) == 65 and {r["error"] for r in rows} == {"batch_too_large"}
    assert _get(f"{server.url}/ping") == 200


def test_malformed_requests_are_refused_and_the_server_stays_up(server):
    # Request-shape errors never reach the model: MLflow answers 400 itself.
    for body in (b"{not json", _split("abc", explain="perhaps")):
        status, text = _post(server, body)
        assert status == 400
        assert "Traceback" not in text
    assert _get(f"{server.url}/ping") == 200
    status, text = _post(server, _split(_png(_face(50))))
    assert status == 200 and json.loads(text)["predictions"][0]["error"] == ""


def _load_driver():
    """``benchmarks/serving_load.py`` (its client processes run that file too)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_load.py"
    spec = importlib.util.spec_from_file_location("serving_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_two_clients_of_mixed_rows_lose_nothing_and_ping_stays_healthy(server):
    # 2 client processes x 200 requests of 1-4 rows, good and bad mixed; every good row must
    # equal its answer alone, every bad row carry its code, /ping answer 200 throughout.
    # Timings are printed by `python benchmarks/serving_load.py`, never asserted.
    load = _load_driver()
    report = load.run_load(server.url, server.pid, clients=2, n_requests=200)
    assert report.problems == [], report.problems[:10]
    assert report.requests == 400 and len(report.latencies) == 400
    assert report.good_rows > 0 and report.bad_rows > 0
    assert report.pings >= 1 and report.max_rss_mb > 0
