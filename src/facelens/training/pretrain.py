"""A face-pretrained backbone made offline: VGG16-BN trained on a pool of SynthFACS people
that the task's data never contains, on an objective that never sees the task's targets.

The pool is drawn in the ``pre-`` namespace of the generator (its own seed stream, ids
``pre-p0001``...). Two objectives: ``identity`` (which pool person a face shows, as VGG-Face
learned on real faces) and ``geometry`` (where each face part is and how it is shaped, from
the region masks: the synthetic analogue of pretraining on facial landmarks). Training reads
each face's pixels and its identity or mask, nothing else: expression labels, action units and
attribute ratings are never looked at (tests/integration/test_pretrain.py scrambles them and
gets identical weights). benchmarks/pretrain_probe.py measures which objective leaves features
that still carry expression (an identity objective learns to ignore it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from facelens.constants import REGION_BITS, REGIONS
from facelens.data.dataset import FaceDataset
from facelens.data.leakage import check_pool_disjoint
from facelens.data.synthfacs.generate import SynthSample
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy
from facelens.models.norm import DEFAULT_NORM
from facelens.models.vgg import FaceVGG
from facelens.training.checkpoint import cpu_state
from facelens.training.fit import fit
from facelens.training.history import Callback, History
from facelens.training.params import PretrainParams, TrainParams

__all__ = [
    "GEOMETRY_FIELDS",
    "NAMESPACE",
    "PretrainParams",
    "Pretrained",
    "backbone_file",
    "backbone_fingerprint",
    "check_backbone_pool",
    "identity_fingerprint",
    "mask_geometry",
    "pretrain_backbone",
    "read_pretrain_meta",
    "train_params",
]

#: Prefix of the pretraining pool's sample and identity ids (and its seed stream's key).
NAMESPACE = "pre-"


@dataclass(frozen=True)
class Pretrained:
    """A pretrained backbone: its state dict (the identity head dropped), what it learned
    from, and how well it tells the pool's people apart."""

    arch: str
    state: dict[str, Tensor]
    identities: list[str]
    history: History
    #: Held-out score of the objective: identity macro-F1 or geometry mean Pearson r.
    val_score: float


def backbone_file(directory: Path, arch: str) -> Path:
    """Where the pretrained backbone for ``arch`` lives in the ``pretrain`` output folder."""
    return Path(directory) / f"{arch}.pt"


def read_pretrain_meta(directory: Path) -> dict:
    """The ``meta.json`` the ``pretrain`` stage writes beside the weights ({} if absent)."""
    path = Path(directory) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def backbone_fingerprint(weights: str, pretrained_dir: str | Path) -> str:
    """A short hash of the pretrained backbones ``weights`` may resolve to ("" when it cannot
    resolve to one): part of the study name and of the train checkpoint key, so a rebuilt
    backbone starts a fresh study and a fresh training instead of resuming the old ones."""
    if weights not in ("auto", "pretrained"):
        return ""
    files = sorted(Path(pretrained_dir).glob("*.pt"))
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_backbone_pool(
    weights: str, pretrained_dir: str | Path, manifest: pd.DataFrame, where: str
) -> None:
    """When ``weights`` may resolve to the pretrained backbone (``auto`` / ``pretrained``)
    and one exists, refuse task data sharing a person or an image with its pool
    (:func:`~facelens.data.leakage.check_pool_disjoint`)."""
    if weights not in ("auto", "pretrained"):
        return
    meta = read_pretrain_meta(Path(pretrained_dir))
    if meta:
        check_pool_disjoint(
            manifest,
            meta.get("identities", []),
            meta.get("image_sha256", []),
            meta.get("namespace", NAMESPACE),
            where=where,
        )


def _identity_split(
    samples: Sequence[SynthSample], val_per_identity: int
) -> tuple[list[int], list[int], list[str]]:
    """Train / val sample indices (the last ``val_per_identity`` faces of each person held
    out) and the sorted identity names (the class order)."""
    names = sorted({s.identity for s in samples})
    by_person: dict[str, list[int]] = {n: [] for n in names}
    for i, s in enumerate(samples):
        by_person[s.identity].append(i)
    train: list[int] = []
    val: list[int] = []
    for idx in by_person.values():
        if len(idx) <= val_per_identity:
            raise ValueError(
                f"pretrain.val_per_identity ({val_per_identity}) must be below "
                f"pretrain.images_per_identity ({len(idx)})"
            )
        train += idx[:-val_per_identity]
        val += idx[-val_per_identity:]
    return train, val, names


#: Per face part of the region masks, the geometry the ``geometry`` objective regresses.
GEOMETRY_FIELDS = ("area", "x", "y", "spread_x", "spread_y")


def mask_geometry(mask: np.ndarray) -> np.ndarray:
    """Where each face part is and how it is shaped, from one region mask: per region of
    :data:`~facelens.constants.REGIONS`, its area share, centroid and spread (x, y in [0, 1];
    zeros for a part not visible). The synthetic analogue of facial landmarks."""
    size = mask.shape[0]
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    out: list[float] = []
    for region in REGIONS:
        on = (mask & REGION_BITS[region]) > 0
        n = int(on.sum())
        if n == 0:
            out += [0.0] * len(GEOMETRY_FIELDS)
            continue
        ys, xs = np.nonzero(on)
        x, y = coords[xs], coords[ys]
        out += [n / on.size, x.mean(), y.mean(), x.std(), y.std()]
    return np.asarray(out, np.float32)


def _targets(
    samples: Sequence[SynthSample], objective: str, people: list[str]
) -> tuple[str, np.ndarray, list[str]]:
    """``(fit task, targets, output names)`` of an objective: identity indices
    (classification) or the face-part geometry of each mask (regression)."""
    if objective == "identity":
        index = {n: k for k, n in enumerate(people)}
        return "expression", np.array([index[s.identity] for s in samples], np.int64), people
    geometry = np.stack([mask_geometry(s.mask) for s in samples])
    return "attributes", geometry, [f"{r}_{f}" for r in REGIONS for f in GEOMETRY_FIELDS]


def _datasets(
    samples: Sequence[SynthSample], params: PretrainParams
) -> tuple[FaceDataset, FaceDataset, str]:
    train_idx, val_idx, people = _identity_split(samples, params.val_per_identity)
    # Pixels, identity and region masks only: nothing else of a sample is read.
    task, targets, outputs = _targets(samples, params.objective, people)
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    mean, std = DEFAULT_NORM
    size = params.image_size
    train_tf = make_transform(
        size, train=True, augment=params.augment, norm_mean=mean, norm_std=std
    )
    val_tf = make_transform(size, train=False, augment=0.0, norm_mean=mean, norm_std=std)
    stats = None
    if task == "attributes":  # standardised on the training faces, as the task's ratings are
        fit_on = targets[train_idx]
        stats = (fit_on.mean(0), np.maximum(fit_on.std(0), 1e-6).astype(np.float32))

    def subset(idx: list[int], tf) -> FaceDataset:
        return FaceDataset.from_tensors(
            images[idx].contiguous(),
            targets[idx],
            task,
            transform=tf,
            target_names=outputs,
            target_stats=stats,
            ids=[samples[i].id for i in idx],
        )

    return subset(train_idx, train_tf), subset(val_idx, val_tf), task


def train_params(params: PretrainParams) -> TrainParams:
    """The training recipe of the pretraining run (whole backbone, one-cycle AdamW)."""
    return TrainParams(
        optimizer="adamw",
        lr=params.lr,
        weight_decay=params.weight_decay,
        batch_size=params.batch_size,
        epochs=params.epochs,
        augment=params.augment,
        head="pooled",
        dropout=0.0,
        trainable_blocks=5,
        schedule="onecycle",
        seed=params.seed,
        precision=params.precision,
    )


def pretrain_backbone(
    samples: Sequence[SynthSample],
    params: PretrainParams,
    arch: str,
    *,
    policy: DevicePolicy | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> Pretrained:
    """Train ``arch`` from random initialisation to classify the identity of ``samples``.

    Args:
        samples: the pool (``generate(..., namespace=NAMESPACE)``); only ``image`` and
            ``identity`` are read.
        params: the ``pretrain`` section.
        arch: ``vgg16`` or ``vgg16_bn``.
        policy: device and precision (``None``: the CPU in ``params.precision``).
        callbacks: ``fit`` callbacks (MLflow epoch logging).
        progress: show progress bars.

    Returns:
        The backbone's weights (``blocks.*`` only) and its held-out identity accuracy.
    """
    train_ds, val_ds, task = _datasets(samples, params)
    width = len(train_ds.target_names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = FaceVGG(arch, num_outputs=width, head="pooled", dropout=0.0)  # type: ignore[arg-type]
    history = fit(
        model,
        train_ds,
        val_ds,
        train_params(params),
        task,
        callbacks=callbacks,
        progress=progress,
        policy=policy,
    )
    state = {k: v for k, v in cpu_state(model).items() if k.startswith("blocks.")}
    people = sorted({s.identity for s in samples})
    return Pretrained(arch, state, people, history, float(history.best_val_metric))


def identity_fingerprint(identities: Sequence[str]) -> str:
    """A short hash of the pool's identity list (recorded with the weights)."""
    return hashlib.sha256("\n".join(sorted(identities)).encode()).hexdigest()[:16]
