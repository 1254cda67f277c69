"""How well the OOD score separates the test split from images outside the training
distribution (issue 14): AUROC and the share flagged at the calibrated threshold.

    python benchmarks/ood.py --model /tmp/repro13/models/model --data /tmp/repro13/data \\
        --params /tmp/repro13/params.yaml

Every image goes through the served pyfunc (:class:`facelens.serving.pyfunc.FaceLensModel`:
the decoder, resize and normalisation of ``mlflow models serve``) as a PNG. The model folder
is copied; when it has no detector yet (exported before OOD scores existed) one is fitted on
its train split and calibrated on its val split (5% false alarms), as the train stage does.
Missing ``train.csv`` / ``val.csv`` are re-derived with the split stage's code from
``--params``, checked against the ``test.csv`` that is there.

Out-of-distribution sets: generated noise and textures (9 kinds), random crops of the two
photographs scikit-learn ships (``load_sample_images``: a temple in China, a flower; the crops
of one photo are not independent) and the one real face any installed package ships
(matplotlib's portrait of Grace Hopper: the whole photo and the face found by the Haar
cascade, as ``facelens predict --detect-face`` crops it). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from facelens.data.split_csv import load_split, load_splits
from facelens.models.export import attach_ood, load_exported
from facelens.serving.pyfunc import FaceLensModel
from facelens.training.ood import fit_split_ood

SIDE = 96  # generated images; the served model resizes to its input size


def _splits(data: Path, params_file: Path) -> dict[str, pd.DataFrame]:
    prepared, splits = data / "prepared", data / "splits"
    names = ("train", "val", "test")
    if all((splits / f"{n}.csv").is_file() for n in names):
        print(f"splits read from {splits}")
        return dict(zip(names, load_splits(prepared, splits, names), strict=True))
    from facelens.config import load_params
    from facelens.data.split import split_prepared

    out = Path(tempfile.mkdtemp(prefix="ood-splits-"))
    split_prepared(prepared, out, load_params(params_file).split)
    derived = dict(zip(names, load_splits(prepared, out, names), strict=True))
    shipped = load_split(splits / "test.csv", prepared)
    if sorted(derived["test"]["id"]) != sorted(shipped["id"]):
        raise SystemExit(f"re-derived test split differs from {splits / 'test.csv'}")
    print(f"train/val re-derived from {params_file}; the test split matches {splits}/test.csv")
    return derived


def _calibrated(model_dir: Path, parts: dict[str, pd.DataFrame], prepared: Path, work: Path):
    """A copy of ``model_dir`` with a detector (fitted here when it has none) and its meta."""
    target = work / "model"
    shutil.copytree(model_dir, target)
    model, meta = load_exported(target)
    fitted = meta.ood_threshold is None
    if fitted:
        detector = fit_split_ood(model, meta, parts["train"], parts["val"], prepared)
        meta = attach_ood(target, meta, detector)
    return target, meta, fitted


def _smooth(rng: np.random.Generator, cells: int) -> np.ndarray:
    small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((SIDE, SIDE), Image.Resampling.BICUBIC))


def _stripes(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 24)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    colours = rng.integers(0, 256, (2, 3))
    mix = (wave[..., None] + 1) / 2
    return (colours[0] * mix + colours[1] * (1 - mix)).astype(np.uint8)


def _shapes(rng: np.random.Generator) -> np.ndarray:
    img = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - 8, 2))
        x1, y1 = x0 + int(rng.integers(8, SIDE // 2)), y0 + int(rng.integers(8, SIDE // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return np.asarray(img)


def _generated(n: int, seed: int) -> dict[str, list[np.ndarray]]:
    """``n`` images of each generated kind."""
    rng = np.random.default_rng(seed)
    shape = (SIDE, SIDE, 3)

    def gradient() -> np.ndarray:
        ramp = np.linspace(0.0, 1.0, SIDE)
        a, b = rng.integers(0, 256, (2, 3))
        t = np.add.outer(ramp, ramp)[..., None] / 2 if rng.random() < 0.5 else ramp[None, :, None]
        return np.broadcast_to(a + (b - a) * t, shape).astype(np.uint8)

    def checker() -> np.ndarray:
        cell = int(rng.integers(2, 17))
        board = (np.indices((SIDE, SIDE)).sum(0) // cell) % 2
        a, b = rng.integers(0, 256, (2, 3))
        return np.where(board[..., None] == 1, a, b).astype(np.uint8)

    def salt_pepper() -> np.ndarray:
        return (rng.random(shape[:2]) < 0.5)[..., None].repeat(3, -1).astype(np.uint8) * 255

    makers = {
        "uniform noise": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
        "gaussian noise": lambda: np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8),
        "salt and pepper": salt_pepper,
        "smooth noise (blobs)": lambda: _smooth(rng, int(rng.integers(3, 12))),
        "solid colour": lambda: np.broadcast_to(rng.integers(0, 256, 3), shape).astype(np.uint8),
        "colour gradient": gradient,
        "checkerboard": checker,
        "stripes": lambda: _stripes(rng),
        "random shapes": lambda: _shapes(rng),
    }
    return {name: [make() for _ in range(n)] for name, make in makers.items()}


def _photo_crops(n: int, seed: int) -> dict[str, list[np.ndarray]]:
    """The two sklearn photographs, whole and as ``n`` random square crops each."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    bunch = load_sample_images()
    for name, photo in zip(bunch.filenames, bunch.images, strict=True):
        h, w = photo.shape[:2]
        crops = [photo]
        for _ in range(n):
            side = int(rng.integers(64, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crops.append(photo[y : y + side, x : x + side])
        out[f"photo {Path(name).stem} (whole + crops)"] = crops
    return out


def _real_face() -> dict[str, np.ndarray]:
    """matplotlib's Grace Hopper portrait, whole and cropped to the detected face."""
    from matplotlib import cbook

    from facelens.data.images import decode_image
    from facelens.serving.faces import crop_face, detect_faces, haar_available

    photo = decode_image(
        Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    )
    out = {"grace_hopper (whole photo)": photo}
    if haar_available():
        boxes = detect_faces(photo)
        if boxes:
            out["grace_hopper (detected face, margin 0.25)"] = crop_face(photo, boxes[0], 0.25)
    return out


def _encode(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _served(images: list[str], model: FaceLensModel) -> pd.DataFrame:
    frames = [
        model.predict(None, pd.DataFrame({"image": images[i : i + 64]}))
        for i in range(0, len(images), 64)
    ]
    out = pd.concat(frames, ignore_index=True)
    bad = out[out["error"] != ""]
    if len(bad):
        raise SystemExit(f"{len(bad)} rows failed: {bad['message'].iloc[0]}")
    return out


def _auroc(ood: np.ndarray, ind: np.ndarray) -> float:
    """P(score of an OOD image > score of a test image), ties counted half."""
    both = np.concatenate([ind, ood])
    ranks = pd.Series(both).rank().to_numpy()[len(ind) :]
    return float((ranks.sum() - len(ood) * (len(ood) + 1) / 2) / (len(ood) * len(ind)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("/tmp/repro13/models/model"))
    ap.add_argument("--data", type=Path, default=Path("/tmp/repro13/data"))
    ap.add_argument("--params", type=Path, default=Path("/tmp/repro13/params.yaml"))
    ap.add_argument("--per-kind", type=int, default=40, help="images per generated kind")
    ap.add_argument("--crops", type=int, default=40, help="random crops per photograph")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ood-bench-"))
    parts = _splits(args.data, args.params)
    model_dir, meta, fitted = _calibrated(args.model, parts, args.data / "prepared", work)
    served = FaceLensModel()
    served.load_context(mlflow.pyfunc.PythonModelContext({"model_dir": str(model_dir)}, {}))
    test_files = [args.data / "prepared" / f for f in parts["test"]["file"]]
    test_b64 = [base64.b64encode(p.read_bytes()).decode("ascii") for p in test_files]
    test = _served(test_b64, served)
    ind = test["ood_score"].astype(float).to_numpy()
    detector = served._ood
    print(
        f"model {args.model} ({meta.input_size} px, {meta.head} head, D={detector.dim}); "
        f"detector {'fitted here' if fitted else 'as exported'} on {detector.n_fit} train "
        f"images, shrinkage {detector.shrinkage:.3f}, threshold {detector.threshold:.2f}; "
        f"val flagged {detector.val_flagged:.3f}, test flagged {np.mean(ind > detector.threshold):.3f} "
        f"of {len(ind)}"
    )
    sets = {**_generated(args.per_kind, args.seed), **_photo_crops(args.crops, args.seed)}
    rows = []
    print("\n| out-of-distribution set | images | AUROC vs test | flagged |\n|---|---|---|---|")
    pooled: dict[str, list[float]] = {"generated": [], "photos": []}
    for name, images in sets.items():
        scores = (
            _served([_encode(im) for im in images], served)["ood_score"].astype(float).to_numpy()
        )
        pooled["photos" if name.startswith("photo") else "generated"].extend(scores)
        rows.append(
            {
                "set": name,
                "n": len(scores),
                "auroc": _auroc(scores, ind),
                "flagged": float(np.mean(scores > detector.threshold)),
            }
        )
    for name, scores in pooled.items():
        arr = np.asarray(scores)
        rows.append(
            {
                "set": f"all {name}",
                "n": len(arr),
                "auroc": _auroc(arr, ind),
                "flagged": float(np.mean(arr > detector.threshold)),
            }
        )
    for r in rows:
        print(f"| {r['set']} | {r['n']} | {r['auroc']:.3f} | {r['flagged']:.2f} |")
    print(
        "\n| real face | ood_score | flagged | share of test scores below | predicted |\n|---|---|---|---|---|"
    )
    for name, img in _real_face().items():
        row = _served([_encode(img)], served).iloc[0]
        score = float(row["ood_score"])
        below = float(np.mean(ind < score))
        print(f"| {name} | {score:.2f} | {bool(row['ood'])} | {below:.3f} | {row['label']} |")
        rows.append(
            {
                "set": name,
                "n": 1,
                "score": score,
                "flagged": bool(row["ood"]),
                "test_below": below,
                "label": row["label"],
            }
        )
    if args.json:
        args.json.write_text(json.dumps({"threshold": detector.threshold, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
