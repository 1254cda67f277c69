"""``ModelMeta``: everything needed to rebuild, feed and interpret an exported model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from facelens.data.transforms import ImageTransform, make_transform
from facelens.errors import ModelFileError
from facelens.models.norm import DEFAULT_NORM
from facelens.models.vgg import FaceVGG

__all__ = ["ModelMeta"]


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild, feed and interpret an exported model."""

    task: str
    arch: str
    num_outputs: int
    output_names: tuple[str, ...]
    input_size: int
    head: str
    dropout: float
    weights_source: str
    norm_mean: tuple[float, ...]
    norm_std: tuple[float, ...]
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    #: Out-of-distribution threshold (``ood.npz`` beside the model holds the detector, see
    #: :mod:`facelens.models.ood`); ``None``: exported without one (no OOD score).
    ood_threshold: float | None = None
    #: Share of validation images flagged at ``ood_threshold``'s calibration target.
    ood_false_alarm: float | None = None

    def __post_init__(self) -> None:
        if len(self.output_names) != self.num_outputs:
            raise ValueError(
                f"output_names has {len(self.output_names)} names but num_outputs is "
                f"{self.num_outputs}; give one name per output"
            )
        for name in ("target_mean", "target_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_outputs:
                raise ValueError(f"{name} must have {self.num_outputs} values; got {len(value)}")

    @classmethod
    def for_model(
        cls,
        model: FaceVGG,
        *,
        task: str,
        output_names: Sequence[str],
        input_size: int,
        weights_source: str,
        norm: tuple[Sequence[float], Sequence[float]] = DEFAULT_NORM,
        target_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> ModelMeta:
        """The metadata of ``model`` (arch, head, dropout and width are read off it).

        Args:
            norm: image ``(mean, std)`` the model was trained with.
            target_stats: ``(mean, std)`` of the standardised attribute targets, or None.
        """
        return cls(
            task=task,
            arch=model.arch,
            num_outputs=model.num_outputs,
            output_names=tuple(output_names),
            input_size=int(input_size),
            head=model.head,
            dropout=model.dropout,
            weights_source=weights_source,
            norm_mean=tuple(float(x) for x in norm[0]),
            norm_std=tuple(float(x) for x in norm[1]),
            target_mean=None if target_stats is None else tuple(float(x) for x in target_stats[0]),
            target_std=None if target_stats is None else tuple(float(x) for x in target_stats[1]),
        )

    def target_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` of the standardised attribute targets, or None (expression task)."""
        if self.target_mean is None or self.target_std is None:
            return None
        return np.asarray(self.target_mean), np.asarray(self.target_std)

    def eval_transform(self) -> ImageTransform:
        """The evaluation transform of this model: no augmentation, the model's input size and
        image normalisation (what evaluate, explain, manifold and serving feed it)."""
        return make_transform(
            self.input_size,
            train=False,
            augment=0.0,
            norm_mean=self.norm_mean,
            norm_std=self.norm_std,
        )

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: not JSON, unknown or missing fields.
        """
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFileError(f"unknown ModelMeta field(s) {unknown}; allowed: {sorted(known)}")
        for key in ("output_names", "norm_mean", "norm_std", "target_mean", "target_std"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as err:
            raise ModelFileError(f"invalid ModelMeta JSON: {err}") from err
