"""Does the identity-pretrained backbone still carry expression? A linear probe on frozen
features: pretrain (or load) backbones, embed the task's train and test splits with the
backbone frozen (global-average-pooled output of block 4 and of block 5), fit a logistic
regression on train and print test macro-F1 / accuracy, beside a randomly initialised
backbone (the ``weights: none`` baseline). Also times the pretraining.

    python benchmarks/pretrain_probe.py --prepared data/prepared --splits data/splits \\
        --backbone models/pretrained/vgg16_bn.pt
    python benchmarks/pretrain_probe.py --pretrain n_identities=160 images_per_identity=12

Nothing is asserted; benchmarks/README.md records the figures with the command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from facelens.data.dataset import FaceDataset
from facelens.data.split_csv import load_splits
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams
from facelens.data.transforms import make_transform
from facelens.models.norm import DEFAULT_NORM
from facelens.models.vgg import FaceVGG
from facelens.models.weights import load_weights_into
from facelens.training.metrics import accuracy, macro_f1
from facelens.training.params import PretrainParams
from facelens.training.pretrain import NAMESPACE, pretrain_backbone


@torch.no_grad()
def _features(model: FaceVGG, ds: FaceDataset) -> dict[int, np.ndarray]:
    model.eval()
    out: dict[int, list[np.ndarray]] = {4: [], 5: []}
    for start in range(0, len(ds), 128):
        x, _ = ds.get_batch(torch.arange(start, min(start + 128, len(ds))))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            acts = x
            for b, block in enumerate(model.blocks, start=1):
                acts = block(acts)
                if b in out:
                    out[b].append(acts.float().mean(dim=(2, 3)).numpy())
    return {b: np.concatenate(v) for b, v in out.items()}


def _probe(model: FaceVGG, train: FaceDataset, test: FaceDataset) -> dict[int, tuple[float, float]]:
    ftr, fte = _features(model, train), _features(model, test)
    scores = {}
    for b in ftr:
        scaler = StandardScaler().fit(ftr[b])
        clf = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(ftr[b]), train.labels)
        pred = clf.predict(scaler.transform(fte[b]))
        scores[b] = (macro_f1(test.labels, pred, 7), accuracy(test.labels, pred))
    return scores


def _datasets(prepared: Path, splits: Path, size: int) -> tuple[FaceDataset, FaceDataset]:
    train_rows, test_rows = load_splits(prepared, splits, ("train", "test"))
    tf = make_transform(
        size, train=False, augment=0.0, norm_mean=DEFAULT_NORM[0], norm_std=DEFAULT_NORM[1]
    )
    return (
        FaceDataset(train_rows, prepared, "expression", size, tf),
        FaceDataset(test_rows, prepared, "expression", size, tf),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits"))
    ap.add_argument("--backbone", type=Path, nargs="*", default=[], help="<arch>.pt files")
    ap.add_argument("--pretrain", nargs="*", default=None, help="pretrain params key=value")
    ap.add_argument("--save", type=Path, default=None, help="save the pretrained backbone here")
    ap.add_argument("--arch", default="vgg16_bn")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    train, test = _datasets(args.prepared, args.splits, args.size)
    print(f"probe: {len(train)} train / {len(test)} test faces, {args.size} px, frozen backbone")
    torch.manual_seed(0)
    rows = [("random init (weights: none)", FaceVGG(args.arch, num_outputs=7, head="pooled"))]
    for path in args.backbone:
        model = FaceVGG(args.arch, num_outputs=7, head="pooled")
        load_weights_into(model, torch.load(path, map_location="cpu", weights_only=True))
        rows.append((str(path), model))
    if args.pretrain is not None:
        pp = PretrainParams(**dict(kv.split("=", 1) for kv in args.pretrain))
        synth = SynthParams(
            n_identities=pp.n_identities,
            expressions_per_identity=pp.images_per_identity,
            seed=pp.seed,
        )
        start = time.perf_counter()
        pool = generate(synth, pp.image_size, namespace=NAMESPACE)
        res = pretrain_backbone(pool.samples, pp, args.arch, progress=False)
        seconds = time.perf_counter() - start
        print(
            f"pretrained {args.pretrain}: {len(pool.samples)} images, {seconds:.0f} s, "
            f"held-out {pp.objective} score {res.val_score:.3f}"
        )
        if args.save:
            torch.save(res.state, args.save)
        model = FaceVGG(args.arch, num_outputs=7, head="pooled")
        load_weights_into(model, res.state)
        rows.append((f"pretrained {' '.join(args.pretrain)}", model))
    for name, model in rows:
        s = _probe(model, train, test)
        print(
            f"{name}: block 4 macro-F1 {s[4][0]:.3f} (acc {s[4][1]:.3f}); "
            f"block 5 macro-F1 {s[5][0]:.3f} (acc {s[5][1]:.3f})"
        )


if __name__ == "__main__":
    main()
