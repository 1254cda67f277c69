"""The measured trial fidelity of a study's design, shown on the study's MLflow parent run.

How well trial scores rank configurations the way full training does is measured offline by
``benchmarks/tuning_fidelity.py --record reports/tuning_fidelity.json`` (an hour here, so not
inside the stage). The record keys each measured trial design by the name of the study that
design makes (data version, model, recipe, space, trial share, backbone: see
:func:`facelens.stages.tune.study_name`), so the ``tune`` stage can show the measurement on
its parent run exactly when its own study is the one that was measured — and say so when it
is not.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow

__all__ = ["FIDELITY_TAG", "log_fidelity", "read_record"]

#: Parent-run tag: the measured fidelity in words, or why there is none.
FIDELITY_TAG = "fidelity"


def read_record(path: Path) -> dict[str, Any] | str:
    """The record at ``path``, or a one-line reason it cannot be used."""
    if not path.exists():
        return (
            f"no fidelity record at {path} (python benchmarks/tuning_fidelity.py --record {path})"
        )
    try:
        record = json.loads(path.read_text())
        for name, design in record["designs"].items():
            _check_design(name, design)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"fidelity record {path} is unreadable ({type(exc).__name__}: {exc}); measure again"
    return record


def _check_design(name: str, design: Any) -> None:
    if not isinstance(design.get("study"), str):
        raise TypeError(f"design {name}: 'study' must be a study name")
    if not isinstance(design.get("measured_by", ""), str):
        raise TypeError(f"design {name}: 'measured_by' must be the command that measured it")
    numbers = [design["spearman"], *design["ci"], *(x for pair in design["pairs"] for x in pair)]
    if len(design["ci"]) != 2 or any(len(pair) != 2 for pair in design["pairs"]):
        raise ValueError(f"design {name}: 'ci' and each pair must hold two numbers")
    if not all(isinstance(x, int | float) for x in numbers):
        raise TypeError(f"design {name}: spearman, ci and pairs must be numbers")


def log_fidelity(run_id: str, study_name: str, path: Path) -> str | None:
    """Show the fidelity measured for ``study_name``'s design on the parent run ``run_id``:
    metrics ``fidelity_spearman``, ``fidelity_ci_low``, ``fidelity_ci_high``,
    ``fidelity_configs``, the tag :data:`FIDELITY_TAG` and ``study/fidelity.png``.

    Returns:
        A note for the user when nothing was measured for this study (also the tag), else None.
    """
    client = mlflow.MlflowClient()
    record = read_record(path)
    if isinstance(record, str):
        client.set_tag(run_id, FIDELITY_TAG, record[:5000])
        return record
    found = [(n, d) for n, d in record["designs"].items() if d["study"] == study_name]
    if not found:
        measured = "; ".join(
            f"{n} (study {d['study']}): Spearman {d['spearman']:.2f}"
            for n, d in record["designs"].items()
        )
        note = (
            f"trial fidelity not measured for study {study_name} (another data version, recipe, "
            f"space or trial share); {path} has {measured or 'no design'}"
        )
        client.set_tag(run_id, FIDELITY_TAG, note[:5000])
        return note
    name, design = found[0]
    lo, hi = (float(x) for x in design["ci"])
    rho = float(design["spearman"])
    metrics = {
        "fidelity_spearman": rho,
        "fidelity_ci_low": lo,
        "fidelity_ci_high": hi,
        "fidelity_configs": float(len(design["pairs"])),
    }
    for key, value in metrics.items():
        if math.isfinite(value):
            client.log_metric(run_id, key, value)
    by = design.get("measured_by") or record.get("measured_by", "benchmarks/tuning_fidelity.py")
    client.set_tag(
        run_id,
        FIDELITY_TAG,
        f"{name} trials vs full training: Spearman {rho:.2f} (95% CI {lo:.2f} .. {hi:.2f}) "
        f"over {len(design['pairs'])} configurations; measured by {by}"[:5000],
    )
    from facelens.plots import fidelity_figure, plt

    fig = fidelity_figure(
        [p[0] for p in design["pairs"]],
        [p[1] for p in design["pairs"]],
        f"Trial fidelity ({name}): Spearman {rho:.2f} [{lo:.2f}, {hi:.2f}]",
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fidelity.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        client.log_artifact(run_id, str(out), artifact_path="study")
    return None
