"""Shared fixtures: tiny datasets of every supported format, built on the fly in ``tmp_path``.

Factories (``make_image``, ``encode``) are plain functions exposed as fixtures so tests can
build exactly the bad inputs they need; dataset fixtures return a :class:`TinySource` that
says what the source contains (good images per class, expected quarantine reasons).
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelens.constants import ATTRIBUTES


def _make_image(seed: int, height: int = 40, width: int = 40, gray: bool = False) -> np.ndarray:
    """A random, blocky image: distinct seeds give perceptually distinct images."""
    rng = np.random.default_rng(seed)
    channels = 1 if gray else 3
    blocks = rng.integers(0, 256, size=(8, 8, channels), dtype=np.uint8)
    img = np.asarray(
        Image.fromarray(blocks.squeeze()).resize((width, height), Image.Resampling.NEAREST)
    )
    noise = rng.integers(-8, 9, size=img.shape)
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _encode(img: np.ndarray | Image.Image, fmt: str = "PNG", **save_kw: object) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares ``width x height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + _png_chunk(b"IEND", b"")
    )


TESTS = Path(__file__).resolve().parent
#: Test tiers, one folder each; every test gets its folder's marker (``-m unit`` etc.).
TIERS = ("unit", "integration", "e2e", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (the folder it lives in): ``make test-fast`` = ``-m unit``."""
    for item in items:
        tier = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def make_image() -> Callable[..., np.ndarray]:
    """``make_image(seed, height=40, width=40, gray=False) -> uint8 array``."""
    return _make_image


@pytest.fixture
def encode() -> Callable[..., bytes]:
    """``encode(img_or_pil, fmt="PNG", **save_kw) -> bytes``."""
    return _encode


@pytest.fixture
def png_bomb() -> Callable[[int, int], bytes]:
    """``png_bomb(width, height) -> bytes``: a ~100-byte PNG declaring a huge image."""
    return _png_bomb


@dataclass
class TinySource:
    """A generated source and what ``prepare`` should find in it."""

    path: Path
    good_per_class: dict[str, int] = field(default_factory=dict)
    bad_reasons: dict[str, int] = field(default_factory=dict)
    table: Path | None = None
    n_good: int = 0
    n_ignored: int = 0


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def fer_folder(tmp_path: Path) -> TinySource:
    """FER image-release layout ``train/<class>/`` and ``test/<class>/`` with one bad file of
    each decoder rejection code plus an unknown class folder."""
    root = tmp_path / "fer_images"
    seed = 0
    layout = {"train": {"happy": 4, "sad": 3, "Angry": 2}, "test": {"happy": 2, "sad": 2}}
    for split, classes in layout.items():
        for cls, n in classes.items():
            for _ in range(n):
                seed += 1
                fmt, ext = ("JPEG", "jpg") if seed % 3 == 0 else ("PNG", "png")
                img = _make_image(seed, 48, 48, gray=True)
                _write(root / split / cls / f"img{seed:03d}.{ext}", _encode(img, fmt, quality=95))
    bad = root / "train" / "happy"
    good_png = _encode(_make_image(999, 48, 48))
    _write(bad / "empty.png", b"")
    _write(bad / "notes.txt", b"this is not an image at all")
    _write(bad / "bomb.png", _png_bomb(40_000, 40_000))
    _write(bad / "cut.png", good_png[: len(good_png) // 2])
    _write(bad / "garbled.png", good_png[:16] + b"\x00" * 40)
    _write(bad / "tiny.png", _encode(_make_image(998, 8, 8)))
    frames = [Image.fromarray(_make_image(900 + i, 32, 32)) for i in range(3)]
    _write(bad / "anim.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    _write(root / "train" / "xyz" / "img500.png", _encode(_make_image(500, 48, 48)))
    _write(root / ".DS_Store", b"\x00\x01")
    return TinySource(
        path=root,
        good_per_class={"angry": 2, "happy": 6, "sad": 5},
        bad_reasons={
            "empty": 1,
            "unsupported_format": 1,
            "too_large": 1,
            "truncated": 1,
            "unreadable": 1,
            "too_small": 1,
            "multi_frame": 1,
            "bad_label": 1,
        },
        n_good=13,
    )


def _fer_pixels(seed: int) -> str:
    return " ".join(str(v) for v in _make_image(seed, 48, 48, gray=True).ravel())


@pytest.fixture
def fer_csv(tmp_path: Path) -> TinySource:
    """A FER2013 CSV with 9 good rows (train/val/test) and one row per CSV problem."""
    path = tmp_path / "fer2013.csv"
    rows = [["emotion", "pixels", "Usage"]]
    usages = ["Training"] * 5 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    for i, usage in enumerate(usages):
        rows.append([str(i % 7), _fer_pixels(100 + i), usage])
    rows.append(["3", " ".join(["1"] * 100), "Training"])  # wrong count
    rows.append(["3", " ".join(["7"] * 2303 + ["x"]), "Training"])  # non-integer
    rows.append(["3", " ".join(["300"] * 2304), "Training"])  # out of range
    rows.append(["9", _fer_pixels(201), "Training"])  # bad label
    rows.append(["happy", _fer_pixels(202), "Training"])  # non-int label
    rows.append(["2", _fer_pixels(203), "Holdout"])  # bad usage
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return TinySource(
        path=path,
        good_per_class={},
        bad_reasons={"bad_pixels": 3, "bad_label": 2, "bad_usage": 1},
        n_good=9,
    )


def _attribute_rows(names: list[str]) -> list[list[object]]:
    attrs = list(ATTRIBUTES[:3])
    header: list[object] = ["Filename", *attrs, "subject", "comment"]
    rows: list[list[object]] = [header]
    for i, name in enumerate(names):
        rows.append([name, 1.0 + i % 9, 5.0, 9.0 - i % 9, f"p{i // 2}", "ok"])
    return rows


def _attributes_dir(tmp_path: Path) -> tuple[Path, list[list[object]]]:
    images = tmp_path / "faces"
    names = [f"face{i:02d}.jpg" for i in range(6)]
    for i, name in enumerate(names):
        _write(images / name, _encode(_make_image(300 + i, 60, 50), "JPEG", quality=95))
    _write(images / "unlisted.jpg", _encode(_make_image(399, 60, 50), "JPEG"))
    rows = _attribute_rows(names)
    rows.append(["face00.jpg", 3.0, 5.0, 7.0, "p0", "second rater"])  # averaged with row 1
    rows.append(["missing.jpg", 2.0, 2.0, 2.0, "p9", ""])  # listed, not on disk
    bad = _attribute_rows(["face05.jpg"])[1]
    rows[6] = [*bad[:1], "high", *bad[2:]]  # face05: non-numeric score
    return images, rows


@pytest.fixture
def attributes_csv(tmp_path: Path) -> TinySource:
    """Images + CSV table: 5 good, 1 non-numeric score, 1 missing file, 1 unlisted image."""
    images, rows = _attributes_dir(tmp_path)
    table = tmp_path / "ratings.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return TinySource(
        path=images,
        table=table,
        bad_reasons={"bad_label": 1, "unreadable": 1},
        n_good=5,
        n_ignored=1,
    )


@pytest.fixture
def attributes_xlsx(tmp_path: Path) -> TinySource:
    """The same as ``attributes_csv`` with an XLSX table (numbers stored as numbers)."""
    from openpyxl import Workbook

    images, rows = _attributes_dir(tmp_path)
    table = tmp_path / "ratings.xlsx"
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.save(table)
    return TinySource(
        path=images,
        table=table,
        bad_reasons={"bad_label": 1, "unreadable": 1},
        n_good=5,
        n_ignored=1,
    )


@contextmanager
def _tempdir_at(path: Path) -> Iterator[None]:
    """``TMPDIR`` and :data:`tempfile.tempdir` point at ``path`` (created) for the block, and
    ``path`` is removed afterwards."""
    import tempfile

    path.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("TMPDIR", str(path))
            monkeypatch.setattr(tempfile, "tempdir", str(path))
            yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_tempdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Temporary files of session- and module-scoped fixtures (servers included) go under the
    session's basetemp, not the machine's /tmp: MLflow downloads every model it loads or serves
    into a ``mkdtemp`` folder it never removes (about 60 MB each)."""
    with _tempdir_at(tmp_path_factory.getbasetemp() / "session-tmp"):
        yield


@pytest.fixture(autouse=True)
def _test_tempdir(tmp_path: Path) -> Iterator[None]:
    """Each test's temporary files (its subprocesses' too) go to a folder beside its tmp_path,
    removed when the test ends, so the suite's disk use stays that of its largest test (with
    ``tmp_path_retention_policy = "failed"`` in pyproject.toml) instead of growing by gigabytes."""
    with _tempdir_at(tmp_path.with_name(tmp_path.name + "-tmp")):
        yield


@pytest.fixture(autouse=True)
def _isolated_tracking(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No test writes to the repository's mlflow.db / optuna.db, and no test inherits another
    test's global MLflow tracking URI (``mlflow.set_tracking_uri`` is process-global): each
    test starts from the session's private default store.

    It asks for ``tmp_path`` so that it is torn down first: the runs a test left open (ended
    below) may live in a store under ``tmp_path``, which is removed when a passing test ends."""
    import os
    import sys

    if "MLFLOW_TRACKING_URI" not in os.environ:
        base = tmp_path_factory.getbasetemp()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base}/default-mlflow.db")
    default_uri = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("FACELENS_OFFLINE", "1")
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(default_uri)


@pytest.fixture(scope="session")
def export_tiny_model() -> Callable[[Path], Path]:
    """Factory: export a random 32-px VGG16 expression model to ``root / "exported"``."""

    def export(root: Path) -> Path:
        from facelens.constants import EXPRESSIONS
        from facelens.models.build import build_model
        from facelens.models.export import export_model
        from facelens.models.meta import ModelMeta
        from facelens.models.params import ModelParams

        model, source = build_model(
            ModelParams(arch="vgg16", weights="none", input_size=32),
            num_outputs=7,
            dropout=0.0,
            seed=0,
        )
        meta = ModelMeta.for_model(
            model, task="expression", output_names=EXPRESSIONS, input_size=32, weights_source=source
        )
        export_model(model, meta, root / "exported")
        return root / "exported"

    return export


@pytest.fixture
def sqlite_store(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """Factory: a private sqlite MLflow store under ``tmp_path``, made the tracking (and with
    ``registry=True`` the registry) URI, with ``experiment`` active; returns the URI.

    The schema migration takes seconds, so one migrated template per session is copied.
    """

    def make(experiment: str, *, registry: bool = False) -> str:
        from mlflow import MlflowClient

        from facelens.tracking.runs import configure

        template = tmp_path_factory.getbasetemp() / "mlflow-template.db"
        if not template.exists():
            MlflowClient(f"sqlite:///{template}").search_experiments()
        db = tmp_path / "mlflow.db"
        shutil.copy(template, db)
        uri = f"sqlite:///{db}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        if registry:
            monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        configure(None, experiment, artifact_location=str(tmp_path / "artifacts"))
        return uri

    return make


REPO = TESTS.parent


def tiny_params(repo: Path = REPO) -> dict:
    """``params.yaml`` shrunk for a whole pipeline in about a minute: 32 px, 12 identities,
    untrained weights, one 1-epoch trial, the two fastest CAM methods, PCA layouts only."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["image_size"] = 32
    params["data"]["synth"]["n_identities"] = 12
    params["model"].update({"input_size": 32, "weights": "none"})
    params["pretrain"].update(
        {
            "n_identities": 4,
            "images_per_identity": 3,
            "val_per_identity": 1,
            "image_size": 32,
            "epochs": 1,
            "batch_size": 4,
        }
    )
    params["train"].update({"epochs": 1, "batch_size": 16})
    params["tune"].update({"n_trials": 1, "pruner": "none", "train_fraction": 1.0})
    params["tune"]["space"].update({"epochs": [1], "batch_size": [16]})
    params["explain"].update(
        {"methods": ["gradcam", "eigencam"], "per_class": 1, "road": False, "batch_size": 8}
    )
    params["manifold"].update({"methods": ["pca"], "max_points": 40, "anchors": 10})
    return params


def copy_project(dest: Path, params: dict | None = None, *, git: bool = False) -> Path:
    """A copy of the pipeline (``dvc.yaml``, ``params.yaml``, ``pipelines/``, ``src/``,
    ``.dvcignore``, ``.gitignore``) initialised as a DVC project at ``dest``; with ``git``
    also a git repository with one commit (``dvc exp`` needs one). Returns ``dest``."""
    import subprocess
    import sys

    import yaml

    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pipelines", "src"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    text = yaml.safe_dump(params, sort_keys=False) if params else (REPO / "params.yaml").read_text()
    (dest / "params.yaml").write_text(text)
    dvc = Path(sys.executable).parent / "dvc"

    def run(*cmd: object) -> None:
        subprocess.run([str(c) for c in cmd], cwd=dest, check=True, capture_output=True)

    if git:
        run("git", "init", "-q")
        run(dvc, "init", "-q")
        run("git", "add", "-A")
        run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    else:
        run(dvc, "init", "--no-scm", "-q")
    return dest


@pytest.fixture(scope="session")
def dvc_project() -> Callable[..., Path]:
    """Factory: :func:`copy_project` (a copy of the pipeline initialised as a DVC project)."""
    return copy_project


@pytest.fixture(scope="session")
def pipeline_params() -> Callable[[], dict]:
    """Factory: :func:`tiny_params` (``params.yaml`` shrunk to run in about a minute)."""
    return tiny_params


def _blobs(
    n_per: int = 20, n_classes: int = 4, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class, far apart: ``(X (N, dim), labels (N,))``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 10.0
    labels = np.repeat(np.arange(n_classes), n_per)
    X = centres[labels] + rng.normal(size=(len(labels), dim))
    return X, labels


@pytest.fixture(scope="session")
def blobs() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory: ``blobs(n_per=20, n_classes=4, dim=16, seed=0) -> (X, labels)``."""
    return _blobs


@pytest.fixture
def save_as_if_from_cuda() -> Callable[[object, Path], None]:
    """``torch.save`` with every storage tagged ``cuda:0``, as a file written from a GPU is
    (this machine may have none): loading it needs ``map_location`` on a CPU-only machine."""
    import torch
    import torch.serialization as ser

    def save(obj: object, path: Path) -> None:
        saved = list(ser._package_registry)
        ser.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
        try:
            torch.save(obj, path)
        finally:
            ser._package_registry[:] = saved

    return save
