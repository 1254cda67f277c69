"""Where should ``explain.sanity_threshold`` sit? Trains two models from different seeds on the
same SynthFACS split and, for every CAM method, measures the mean per-image Spearman between
raw maps (the sanity check's statistic, :func:`facelens.explain.faithfulness.sanity.sanity_check`):

- ``noise``: model A on the probes vs model A on the probes plus small Gaussian noise (the same
  weights: what a map keeps when nothing it should explain changed);
- ``retrained``: model A vs model B, trained from another seed (different weights, the same
  task: the agreement two valid explanations can share through the image alone);
- ``randomized``: model A vs its randomised copy (``explain.randomize: auto``), what the check
  reports.

A method whose ``randomized`` value reaches its ``retrained`` value cannot tell a trained model
from a random one any better than it tells two trained models apart.

    python benchmarks/sanity_threshold.py --out reports/benchmarks/sanity_threshold.json

Nothing is asserted; README ("Explanations") records the figures with the command.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facelens.constants import EXPRESSIONS
from facelens.data.dataset import FaceDataset
from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.data.split_csv import load_splits
from facelens.data.synthfacs.params import SynthParams
from facelens.data.transforms import make_transform
from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.cams.targets import make_targets
from facelens.explain.faithfulness.sanity import randomized_copy, sanity_check
from facelens.explain.params import ExplainParams
from facelens.explain.plan import randomized_layers
from facelens.models.build import build_model
from facelens.models.norm import DEFAULT_NORM
from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG
from facelens.training.evaluation import evaluate
from facelens.training.fit import fit
from facelens.training.params import TrainParams

METHODS = ("gradcam", "hirescam", "guidedgradcam", "gradcam++", "layercam", "eigencam")


def _data(root: Path, size: int, identities: int) -> dict[str, FaceDataset]:
    prepared, splits = root / "prepared", root / "splits"
    prepare_dataset(
        DataParams(image_size=size, synth=SynthParams(n_identities=identities)), prepared
    )
    split_prepared(prepared, splits, SplitParams(val_fraction=0.15, test_fraction=0.2))
    rows = load_splits(prepared, splits, ("train", "val", "test"))
    norm = {"norm_mean": DEFAULT_NORM[0], "norm_std": DEFAULT_NORM[1]}
    tf = make_transform(size, train=True, augment=0.5, **norm)
    ev = make_transform(size, train=False, augment=0.0, **norm)
    out = {}
    for name, r in zip(("train", "val", "test"), rows, strict=True):
        out[name] = FaceDataset(r, prepared, "expression", size, tf if name == "train" else ev)
    return out


def _train(data: dict[str, FaceDataset], size: int, epochs: int, seed: int) -> FaceVGG:
    params = TrainParams(epochs=epochs, seed=seed, batch_size=32, lr=1e-3, precision="fp32")
    model, _ = build_model(ModelParams(input_size=size, weights="none"), num_outputs=7, seed=seed)
    fit(model, data["train"], data["val"], params, "expression", progress=False)
    return model.eval()


def _raw(model: FaceVGG, layer: str, x: torch.Tensor, labels: np.ndarray, method: str):
    targets = make_targets("true", None, labels, EXPRESSIONS)
    lay = model.gradcam_layers()[layer]
    return compute_cam_batch(model, lay, x, targets, method=method, batch_size=16).raw


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--identities", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--probes", type=int, default=48)
    ap.add_argument("--noise", type=float, default=0.05, help="noise std, normalised units")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    layer = "block5" if args.size >= 112 else "block4"  # explain.layer: auto
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sanity-threshold-") as tmp:
        data = _data(Path(tmp), args.size, args.identities)
        models = [_train(data, args.size, args.epochs, seed) for seed in (0, 1)]
    scores = [evaluate(m, data["test"], "expression")["macro_f1"] for m in models]
    test = data["test"]
    n = min(args.probes, len(test))
    x, y = test.get_batch(torch.arange(n))
    labels = y.numpy()
    noisy = x + args.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rand = randomized_copy(models[0], randomized_layers(ExplainParams(layer=layer)), seed=0)
    rows = {}
    for method in METHODS:
        a = _raw(models[0], layer, x, labels, method)
        refs = {
            "noise": _raw(models[0], layer, noisy, labels, method),
            "retrained": _raw(models[1], layer, x, labels, method),
            "randomized": _raw(rand, layer, x, labels, method),
        }
        rows[method] = {k: sanity_check(a, v)["spearman_mean"] for k, v in refs.items()}
        print(method, {k: round(v, 3) for k, v in rows[method].items()}, flush=True)
    doc = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "layer": layer,
        "test_macro_f1": scores,
        "n_probes": n,
        "seconds": round(time.perf_counter() - t0, 1),
        "spearman_mean": rows,
    }
    print(json.dumps(doc, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
