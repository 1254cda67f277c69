"""The real ``mlflow models serve`` process serving a registered facelens model.

A tiny random VGG16 is exported with an out-of-distribution detector (fitted on its features
of SynthFACS faces; the detector of a *trained* model is ``test_ood_stage.py``'s subject),
logged with ``log_pyfunc_model``, registered and aliased ``champion`` in a private sqlite
store; then ``mlflow models serve -m models:/facelens-expression@champion --env-manager
local`` is started as a subprocess and exercised over HTTP with valid and hostile payloads.
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
    faces: list[np.ndarray]  # SynthFACS faces the detector was not fitted on


def _export_with_detector(root: Path, export: Callable[[Path], Path]) -> list[np.ndarray]:
    """Export the tiny model and attach a detector fitted on its features of 60% of 12
    SynthFACS people's faces, calibrated on the next 25%; return the rest's faces."""
    import torch

    from facelens.data.synthfacs.generate import generate
    from facelens.data.synthfacs.params import SynthParams
    from facelens.models.export import attach_ood, load_exported
    from facelens.models.ood import fit_ood

    model_dir = export(root)
    model, meta = load_exported(model_dir)
    model.eval()
    samples = generate(SynthParams(n_identities=12, seed=0), image_size=32).samples
    images = [s.image for s in samples]
    labels = np.array([s.label for s in samples])

    def features(imgs: list[np.ndarray]) -> np.ndarray:
        x = meta.eval_transform()(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2))
        with torch.inference_mode():
            return model.embed(x).float().numpy().astype(np.float64)

    fit, cal = int(len(images) * 0.6), int(len(images) * 0.85)
    detector = fit_ood(features(images[:fit]), labels[:fit], features(images[fit:cal]))
    attach_ood(model_dir, meta, detector)
    return images[cal:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _register_champion(root: Path, uri: str, export: Callable[[Path], Path]) -> list[np.ndarray]:
    from mlflow import MlflowClient

    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register
    from facelens.tracking.runs import configure, tracked_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        configure(None, "e2e-serving", artifact_location=str(root / "artifacts"))
        faces = _export_with_detector(root, export)
        with tracked_run("train"):
            info = log_pyfunc_model(root / "exported")
        version = register(info.model_uri, NAME)
        MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", version.version)
    return faces


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _post(
    server: Server, body: object, timeout: float = 120.0, content_type: str = "application/json"
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server.url}/invocations", data=data, headers={"Content-Type": content_type}
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
    faces = _register_champion(root, uri, export_tiny_model)
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
        yield Server(url=url, log=log, pid=proc.pid, faces=faces)
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


def _refused(status: int, text: str, code: str, *names: str) -> dict:
    assert status == 400, text[:500]
    body = json.loads(text)
    assert set(body) == {"error_code", "error", "message"}, body
    assert (body["error_code"], body["error"]) == ("INVALID_PARAMETER_VALUE", code), body
    assert "\n" not in body["message"] and "Traceback" not in text
    assert all(name in body["message"] for name in names), (names, body["message"])
    return body


def test_too_many_rows_get_a_400_naming_the_limit(server):
    good = _png(_face(41, 16, 16))
    status, text = _post(server, _split(*[good] * 65))
    _refused(status, text, "batch_too_large", "65 rows", "at most 64", "max_rows")
    assert good[:16] not in text
    status, text = _post(server, _split(*[good] * 5, explain=True, method="scorecam"))
    _refused(status, text, "batch_too_large", "max_scorecam_rows")
    status, text = _post(server, _split(*[good] * 64))
    assert status == 200 and {r["error"] for r in json.loads(text)["predictions"]} == {""}
    assert _get(f"{server.url}/ping") == 200


def test_wrong_json_types_get_a_400_naming_the_field_and_the_server_stays_up(server):
    good = _png(_face(42, 16, 16))
    records = [{"image": good}]
    secret = {"explain": "secret-x"}
    cases = [
        ({"inputs": "secret-x"}, "invalid_input", ["'inputs'", "JSON string", "'image'"]),
        ({"dataframe_records": "secret-x"}, "invalid_input", ["'dataframe_records'"]),
        ({"dataframe_records": [{"img": good}]}, "invalid_input", ["'img'", "'image'"]),
        ({"dataframe_records": []}, "invalid_input", ["no column", "'image'"]),
        ({"dataframe_records": [{"image": good, "x": 1}]}, "unknown_column", ["'x'", "'image'"]),
        ({"dataframe_records": records, "inputs": [good]}, "invalid_input", ["'inputs'"]),
        (["secret-x"], "invalid_input", ["JSON array", "dataframe_records"]),
        (b"{secret-x not json", "invalid_json", ["not valid JSON", "dataframe_records"]),
        (b"\xff\xfe{", "invalid_json", ["not valid JSON"]),
        ({"dataframe_records": records, "params": ["x"]}, "invalid_param", ["'params'"]),
        ({"dataframe_records": records, "params": secret}, "invalid_param", ["'explain'"]),
        ({"dataframe_records": records, "params": {"target": 5}}, "invalid_param", ["'target'"]),
    ]
    for body, code, names in cases:
        status, text = _post(server, body)
        _refused(status, text, code, *names)
        assert good[:16] not in text and "secret" not in text, text  # nothing echoed
    # A cell of the wrong type is that row's problem: the other rows are answered.
    status, text = _post(server, {"dataframe_records": [{"image": 5}, {"image": good}]})
    assert status == 200, text[:500]
    rows = json.loads(text)["predictions"]
    assert [r["error"] for r in rows] == ["invalid_base64", ""]
    assert "'image'" in rows[0]["message"] and "base64 string" in rows[0]["message"]
    assert _get(f"{server.url}/ping") == 200
    assert "Traceback" not in server.log.read_text()


def test_a_wrong_content_type_and_a_60mb_body_are_refused_without_echo(server):
    good = _png(_face(43, 16, 16))
    status, text = _post(server, b"secret-x,image", content_type="text/plain")
    assert 400 <= status < 500, (status, text[:500])
    assert "secret" not in text and "Traceback" not in text
    # 60 MB of base64 in one cell: that row is refused before it is decoded, the rest answered.
    huge = "A" * (60 * 1024 * 1024)
    status, text = _post(server, _split(huge, good))
    assert status == 200, text[:500]
    rows = json.loads(text)["predictions"]
    assert [r["error"] for r in rows] == ["too_large", ""]
    assert len(text) < 10_000  # the 60 MB cell is never echoed
    assert _get(f"{server.url}/ping") == 200
    assert "Traceback" not in server.log.read_text()


def test_served_rows_carry_ood_columns_and_noise_is_flagged(server):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    check = ((np.indices((32, 32)).sum(0) // 4) % 2 * 255).astype(np.uint8)
    noise.append(np.repeat(check[..., None], 3, -1))
    values = [*(_png(f) for f in server.faces), *(_png(n) for n in noise), "bad!"]
    status, text = _post(server, _split(*values))
    assert status == 200, text[:500]
    rows = json.loads(text)["predictions"]
    assert len(rows) == len(values) and all({"ood_score", "ood"} <= set(r) for r in rows)
    faces, rest, bad = rows[: len(server.faces)], rows[len(server.faces) : -1], rows[-1]
    assert [r["ood"] for r in rest] == [True] * len(noise)
    assert all(isinstance(r["ood"], bool) and r["error"] == "" for r in faces + rest)
    assert sum(r["ood"] for r in faces) <= len(faces) // 4  # unseen people, mostly in
    assert min(r["ood_score"] for r in rest) > np.median([r["ood_score"] for r in faces])
    assert bad["error"] == "invalid_base64" and bad["ood_score"] is None and bad["ood"] is None


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
