"""Export a trained model to a folder (``state_dict.pt`` + ``meta.json``, and ``ood.npz`` once
an out-of-distribution detector is attached) and load it back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from facelens._io import atomic_path, atomic_write_text
from facelens.errors import MissingInputError
from facelens.models.meta import ModelMeta
from facelens.models.ood import OodDetector
from facelens.models.vgg import FaceVGG

__all__ = ["attach_ood", "export_model", "load_exported"]


def export_model(model: FaceVGG, meta: ModelMeta, out_dir: Path) -> None:
    """Write ``out_dir/state_dict.pt`` and ``out_dir/meta.json``, each atomically.

    The state dict is written first, so a present ``meta.json`` implies a complete export.

    Raises:
        ValueError: ``meta`` disagrees with the model (arch, head or output width).
    """
    for name in ("arch", "head", "num_outputs"):
        if getattr(meta, name) != getattr(model, name):
            raise ValueError(
                f"meta.{name}={getattr(meta, name)!r} but the model has {getattr(model, name)!r}"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "state_dict.pt") as tmp:
        torch.save(state, tmp)
    atomic_write_text(out_dir / "meta.json", meta.to_json())


def attach_ood(model_dir: Path, meta: ModelMeta, detector: OodDetector) -> ModelMeta:
    """Save ``detector`` beside the exported model and record its threshold in ``meta.json``.

    ``ood.npz`` is written first and ``meta.json`` (which names the threshold) last, so a
    ``meta.json`` with a threshold implies a complete detector.

    Returns:
        ``meta`` with ``ood_threshold`` and ``ood_false_alarm`` set.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "state_dict.pt").is_file():
        raise MissingInputError(f"{model_dir} holds no exported model; export it first")
    detector.save(model_dir)
    meta = dataclasses.replace(
        meta, ood_threshold=float(detector.threshold), ood_false_alarm=detector.false_alarm
    )
    atomic_write_text(model_dir / "meta.json", meta.to_json())
    return meta


def load_exported(
    model_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[FaceVGG, ModelMeta]:
    """Load a model written by :func:`export_model`, in eval mode.

    Raises:
        MissingInputError: ``state_dict.pt`` or ``meta.json`` missing in ``model_dir``.
    """
    model_dir = Path(model_dir)
    missing = [n for n in ("state_dict.pt", "meta.json") if not (model_dir / n).is_file()]
    if missing:
        raise MissingInputError(
            f"{model_dir} is not an exported facelens model: missing {missing}. "
            "Point to the directory written by the train stage (e.g. models/model/)."
        )
    meta = ModelMeta.from_json((model_dir / "meta.json").read_text())
    with torch.device("meta"):  # skip the random initialisation; tensors come from the file
        model = FaceVGG(
            meta.arch,  # type: ignore[arg-type]
            num_outputs=meta.num_outputs,
            head=meta.head,  # type: ignore[arg-type]
            dropout=meta.dropout,
        )
    state = torch.load(model_dir / "state_dict.pt", map_location=map_location, weights_only=True)
    model.load_state_dict(state, assign=True)
    model.to(map_location, memory_format=torch.channels_last)  # as trained; see model_input
    model.eval()
    return model, meta
