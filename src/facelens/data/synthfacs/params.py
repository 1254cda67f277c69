"""SynthFACS parameters (the ``data.synth`` section of ``params.yaml``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SynthParams"]


class SynthParams(BaseModel):
    """Every knob of the SynthFACS generator (the ``data.synth`` section of ``params.yaml``).

    The defaults give the reference dataset: 350 identities x 7 expressions = 2,450 faces that
    a small CNN learns (macro-F1 >= 0.9) while a linear model on raw pixels does not
    (macro-F1 <= 0.5).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_identities: int = Field(350, ge=1, le=100_000, description="Number of simulated people.")
    expressions_per_identity: int = Field(
        7,
        ge=1,
        le=70,
        description="Images per identity; labels cycle through a shuffled list of the 7 classes.",
    )
    seed: int = Field(0, ge=0, description="Master seed: same seed and params, same bytes.")

    # --- expression / action units -------------------------------------------------------
    intensity_range: tuple[float, float] = Field(
        (0.35, 1.0), description="Uniform range of the prototype-AU intensity of typical samples."
    )
    weak_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of non-neutral samples drawn with weak intensity."
    )
    weak_range: tuple[float, float] = Field(
        (0.2, 0.35), description="Uniform range of the prototype-AU intensity of weak samples."
    )
    spurious_prob: float = Field(
        0.3, ge=0.0, le=1.0, description="Probability that a non-prototype AU is slightly active."
    )
    spurious_max: float = Field(
        0.1, ge=0.0, le=1.0, description="Upper bound of a spurious (non-prototype) AU intensity."
    )

    # --- identity --------------------------------------------------------------------------
    glasses_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of identities wearing glasses."
    )

    # --- nuisance --------------------------------------------------------------------------
    rotation_deg: float = Field(
        15.0, ge=0.0, le=90.0, description="Max in-plane head rotation (uniform +-, degrees)."
    )
    shift: float = Field(
        0.12, ge=0.0, le=0.5, description="Max face shift, as a fraction of the half image size."
    )
    scale_jitter: float = Field(
        0.1, ge=0.0, le=0.5, description="Max relative face-scale change (uniform +-)."
    )
    lighting: float = Field(
        0.35, ge=0.0, le=1.0, description="Max strength of the linear lighting gradient."
    )
    clutter: float = Field(
        1.0, ge=0.0, le=5.0, description="Background clutter: mean number of shapes / 5."
    )
    noise_std: float = Field(
        0.03, ge=0.0, le=0.5, description="Max sensor-noise std (fraction of full scale)."
    )
    blur_prob: float = Field(0.25, ge=0.0, le=1.0, description="Probability of a Gaussian blur.")
    occlusion_prob: float = Field(
        0.15, ge=0.0, le=1.0, description="Probability of one small occluding blob."
    )

    # --- attribute ratings ------------------------------------------------------------------
    n_raters: int = Field(12, ge=2, le=1000, description="Simulated raters per image.")
    rater_noise: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Multiplier of the calibrated per-rater noise (1.0: reliabilities ~0.6-0.9 "
        "with 12 raters).",
    )
    rater_bias: float = Field(
        0.3, ge=0.0, le=5.0, description="Std of each rater's per-attribute bias (rating units)."
    )
    face_signal: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Share of each latent impression's variance that is a function of the face "
        "(the rest is per-image noise invisible in the image).",
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> SynthParams:
        for name in ("intensity_range", "weak_range"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(
                    f"{name} must satisfy 0 <= low <= high <= 1, got ({lo}, {hi}); "
                    "pass two intensities in [0, 1], low first"
                )
        return self
