"""The ``pretrain`` stage: a face-pretrained backbone per architecture, trained on the
identities of a SynthFACS pool the task's data never contains (see
:mod:`facelens.training.pretrain`), tracked as its own MLflow run.

Its output folder (``models/pretrained``: ``<arch>.pt`` + ``meta.json``) depends on the
``pretrain`` params and code only, so tuning and training experiments never rebuild it. It
holds no MLflow run id: a forced or code-triggered re-run that writes the same weights leaves
the folder's DVC hash unchanged, so ``tune`` and ``train`` are not re-run. The run is found
from the weights instead: it carries ``facelens.weights_sha256.<arch>`` (the full SHA-256 of
``<arch>.pt``, whose first 12 hex digits every fine-tuned run's ``weights_source`` shows).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlflow
import torch

from facelens._io import atomic_write_text
from facelens.config import Params
from facelens.data.manifest import pixel_sha256
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams
from facelens.device import DevicePolicy, device_tags
from facelens.models.norm import DEFAULT_NORM
from facelens.progress import task as progress_task
from facelens.stages.common import progress_printer
from facelens.tracking.runs import MlflowEpochLogger, configure_stage, lineage_tags, tracked_run
from facelens.training.pretrain import (
    NAMESPACE,
    backbone_file,
    identity_fingerprint,
    pretrain_backbone,
)

__all__ = ["WEIGHTS_TAG", "run"]

WEIGHTS_TAG = "facelens.weights_sha256."
"""Tag prefix on the pretrain run: ``<prefix><arch>`` = SHA-256 of ``<arch>.pt``."""


def _save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def run(params: Params, out_dir: Path) -> dict[str, Any]:
    """Generate the identity pool, pretrain every ``pretrain.archs`` backbone and write them
    with ``meta.json`` into ``out_dir``.

    Returns:
        The ``meta.json`` contents: objective, pool size and identity fingerprint, held-out
        score per arch, normalisation and the params (no run id: see the module docstring).
    """
    pp = params.pretrain
    synth = SynthParams(
        n_identities=pp.n_identities, expressions_per_identity=pp.images_per_identity, seed=pp.seed
    )
    pool = generate(synth, pp.image_size, progress_printer("pretrain pool"), namespace=NAMESPACE)
    identities = sorted({s.identity for s in pool.samples})
    fingerprint = identity_fingerprint(identities)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    policy = DevicePolicy.resolve(params.device, pp.precision)
    tags = lineage_tags(
        Path.cwd(), params={"pretrain": pp.model_dump()}, data_version=f"pool:{fingerprint}"
    )
    tags.update({"facelens.stage": "pretrain", "facelens.pretrain.objective": pp.objective})
    tags.update(device_tags(policy))
    scores: dict[str, float] = {}
    with tracked_run(f"pretrain {pp.objective}", tags=tags):
        mlflow.log_params({f"pretrain.{k}": v for k, v in pp.model_dump().items()})
        with progress_task("archs", len(pp.archs)) as bar:
            for k, arch in enumerate(pp.archs):
                bar.update(k, {"now": arch})
                result = pretrain_backbone(
                    pool.samples,
                    pp,
                    arch,
                    policy=policy,
                    callbacks=[MlflowEpochLogger(prefix=arch)],
                )
                path = backbone_file(out_dir, arch)
                _save_state(result.state, path)
                mlflow.set_tag(WEIGHTS_TAG + arch, hashlib.sha256(path.read_bytes()).hexdigest())
                scores[arch] = result.val_score
                mlflow.log_metric(f"{arch}/val_score", result.val_score)
                bar.update(k + 1)
    meta = {
        "objective": pp.objective,
        "namespace": NAMESPACE,
        "n_identities": len(identities),
        "n_images": len(pool.samples),
        "identity_fingerprint": fingerprint,
        "identities": identities,
        "image_sha256": sorted(pixel_sha256(s.image) for s in pool.samples),
        # held-out identity macro-F1 (chance 1 / n_identities) or geometry mean Pearson r
        "val_score": scores,
        "norm_mean": list(DEFAULT_NORM[0]),
        "norm_std": list(DEFAULT_NORM[1]),
        "params": pp.model_dump(),
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")
    return meta
