"""The face-pretrained backbone: it learns from pixels and identities only, its pool of people
is namespaced and disjoint from the task's, and ``weights: auto`` finds it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from facelens.config import parse_params
from facelens.constants import REGION_BITS, REGIONS
from facelens.data.leakage import check_pool_disjoint
from facelens.data.manifest import pixel_sha256
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams
from facelens.errors import LeakageError
from facelens.models.build import build_model
from facelens.models.params import ModelParams
from facelens.stages import pretrain as pretrain_stage
from facelens.stages.pretrain import WEIGHTS_TAG
from facelens.training.params import PretrainParams
from facelens.training.pretrain import (
    GEOMETRY_FIELDS,
    NAMESPACE,
    backbone_fingerprint,
    mask_geometry,
    pretrain_backbone,
)

TINY = {
    "n_identities": 4,
    "images_per_identity": 3,
    "val_per_identity": 1,
    "image_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "precision": "fp32",
}


def _pool(params: PretrainParams):
    synth = SynthParams(
        n_identities=params.n_identities,
        expressions_per_identity=params.images_per_identity,
        seed=params.seed,
    )
    return generate(synth, params.image_size, namespace=NAMESPACE).samples


def _weights(samples, params: PretrainParams) -> dict[str, torch.Tensor]:
    return pretrain_backbone(samples, params, "vgg16_bn", progress=False).state


@pytest.mark.parametrize("objective", ["geometry", "identity"])
def test_pretraining_never_reads_the_task_targets(objective: str) -> None:
    """Scrambling every task target (expression labels, action units, ratings) across the
    pool leaves the pretrained weights bit-identical; scrambling what the objective does
    read (masks for geometry, identities for identity) changes them."""
    params = PretrainParams(**TINY, objective=objective)
    samples = _pool(params)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(samples))
    scrambled = [
        dataclasses.replace(
            s,
            label=samples[j].label,
            aus=rng.random(s.aus.shape).astype(np.float32),
            ratings=samples[j].ratings[::-1].copy(),
        )
        for s, j in zip(samples, order, strict=True)
    ]
    assert any(a.label != b.label for a, b in zip(samples, scrambled, strict=True))
    base = _weights(samples, params)
    assert base and all(k.startswith("blocks.") for k in base)  # the objective's head is dropped
    same = _weights(scrambled, params)
    assert all(torch.equal(base[k], same[k]) for k in base)
    field = "mask" if objective == "geometry" else "identity"
    moved = [
        dataclasses.replace(s, **{field: getattr(samples[j], field)})
        for s, j in zip(samples, order, strict=True)
    ]
    other = _weights(moved, params)
    assert not all(torch.equal(base[k], other[k]) for k in base)


def test_mask_geometry_locates_each_face_part() -> None:
    """Area share, centroid and spread per region; zeros for a part not in the mask."""
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :] = REGION_BITS["face"]
    mask[6, 2:6] |= REGION_BITS["mouth"]  # a 4-pixel mouth, low and centred
    geo = mask_geometry(mask).reshape(len(REGIONS), len(GEOMETRY_FIELDS))
    face, mouth, nose = geo[REGIONS.index("face")], geo[REGIONS.index("mouth")], geo[3]
    assert face.tolist()[:3] == [1.0, 0.5, 0.5]
    np.testing.assert_allclose(mouth[:3], [4 / 64, 0.5, 6.5 / 8])
    assert mouth[4] == 0.0 and mouth[3] > 0  # one row: no vertical spread
    assert not nose.any()


def test_pool_is_namespaced_and_disjoint_from_the_task() -> None:
    """Same generator seed, other stream: no pool person or image is in the task's data,
    and the leakage check refuses task data that mixes pool faces in."""
    pool = _pool(PretrainParams(**TINY))
    task = generate(SynthParams(n_identities=4, expressions_per_identity=3, seed=0), 32).samples
    assert all(s.identity.startswith("pre-p") and s.id.startswith("pre-s") for s in pool)
    assert not {s.identity for s in pool} & {s.identity for s in task}
    pool_sha = [pixel_sha256(s.image) for s in pool]
    task_rows = pd.DataFrame(
        {
            "id": [s.id for s in task],
            "identity": [s.identity for s in task],
            "sha256": [pixel_sha256(s.image) for s in task],
        }
    )
    assert not set(pool_sha) & set(task_rows["sha256"])
    pool_ids = [s.identity for s in pool]
    check_pool_disjoint(task_rows, pool_ids, pool_sha, NAMESPACE)
    mixed = pd.concat(
        [task_rows, pd.DataFrame({"id": ["x1"], "identity": ["pre-p0003"], "sha256": ["0"]})]
    )
    with pytest.raises(LeakageError, match=r"1 pretraining-pool identities \(pre-p0003\)"):
        check_pool_disjoint(mixed, pool_ids, pool_sha, NAMESPACE)
    copied = task_rows.assign(sha256=[pool_sha[0], *task_rows["sha256"][1:]])
    with pytest.raises(LeakageError, match=r"pretraining-pool images \(ids s000000\)"):
        check_pool_disjoint(copied, pool_ids, pool_sha, NAMESPACE, where="data/prepared")


def test_pretrain_stage_writes_a_backbone_that_auto_resolves(
    sqlite_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage writes ``<arch>.pt`` + ``meta.json`` and an MLflow run; with no ImageNet
    weights, ``weights: auto`` builds from that backbone and says so in ``weights_source``."""
    sqlite_store("pretrain")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    params = parse_params({"pretrain": TINY, "tracking": {"experiment": "pretrain"}})
    out = tmp_path / "pretrained"
    meta = pretrain_stage.run(params, out)
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["n_identities"] == 4 and meta["identities"][0] == "pre-p0000"
    assert len(meta["image_sha256"]) == 12 and meta["objective"] == "geometry"
    # no run id in the DVC output (a re-run with the same weights keeps its hash); the run
    # is found from the weights file's SHA-256, the one weights_source abbreviates
    assert "mlflow_run_id" not in meta
    digest = hashlib.sha256((out / "vgg16_bn.pt").read_bytes()).hexdigest()
    runs = mlflow.search_runs(
        experiment_names=["pretrain"],
        filter_string=f"tags.`{WEIGHTS_TAG}vgg16_bn` = '{digest}'",
        output_format="list",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["facelens.stage"] == "pretrain"
    assert "vgg16_bn/val_score" in run.data.metrics
    saved = torch.load(out / "vgg16_bn.pt", weights_only=True)
    with pytest.warns(UserWarning, match="SynthFACS-pretrained backbone"):
        model, source = build_model(ModelParams(pretrained=str(out)), num_outputs=7)
    assert source == f"pretrained:{out.as_posix()}/vgg16_bn.pt#sha256:{digest[:12]}"
    assert torch.equal(model.blocks[4][0].weight, saved["blocks.4.0.weight"])
    assert backbone_fingerprint("auto", out) and backbone_fingerprint("none", out) == ""
