"""SynthFACS: an embedded synthetic facial-expression dataset driven by action units.

A sample is made in four steps, each seeded from one ``numpy.random.SeedSequence`` so that
the same :class:`SynthParams` give byte-identical images:

1. **Identity** (:func:`sample_identity`): face oval size and width-to-height ratio, jaw
   shape, skin tone and blemishes, eye size/spacing/aperture, brows, nose, mouth, hair style
   and colour, glasses, asymmetry. Each identity is shown with ``expressions_per_identity``
   expressions (a shuffled cycle of the 7 classes, so the default set is balanced).
2. **Expression** (:func:`sample_aus`): the class's prototypical action units
   (:data:`PROTOTYPES`, EMFACS-like) at a random intensity, ``U(intensity_range)`` or, for a
   ``weak_fraction`` of samples, ``U(weak_range)``, jittered per AU, plus small spurious
   activations of the other AUs. Neutral faces carry only spurious activations.
3. **Photograph** (:func:`sample_nuisance`, :func:`render_face`): in-plane rotation, scale,
   shift, lighting gradient, exposure, colour cast, cluttered background, occluding blob,
   gaze, blur and sensor noise. The AUs move the drawn geometry: brows (AU1 inner / AU2
   outer raise, AU4 lower and pull together, with forehead wrinkles / glabellar furrows),
   lids (AU5 widen, AU7 tighten), cheeks (AU6 raise, blush, lower lids pushed up), nose (AU9
   wrinkles, raised nostrils), lips (AU10 upper-lip raise, AU12 corners up, AU15 corners
   down, AU16 lower lip down, AU20 stretch, AU23 press), mouth opening (AU25) and jaw (AU26).
   Region masks come from the same polygons and transform.
4. **Ratings** of the 40 attribute poles by simulated raters, from a factor model
   calibrated on the real correlation matrix (see ``facelens.data._synth_ratings``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data._synth_params import SynthParams
from facelens.data._synth_ratings import (
    TRAITS,
    correlation_mad,
    face_cues,
    rate,
    split_half_reliability,
)
from facelens.data._synth_render import (
    AUS,
    Colour,
    Identity,
    Nuisance,
    face_geometry,
    render_face,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "AUS",
    "PROTOTYPES",
    "TRAITS",
    "Identity",
    "Nuisance",
    "SynthDataset",
    "SynthParams",
    "SynthSample",
    "face_geometry",
    "generate",
    "preview_grid",
    "render_face",
    "sample_aus",
    "sample_identity",
    "sample_nuisance",
]

#: Prototypical AU weights per expression (multiplied by the sampled intensity).
PROTOTYPES: dict[str, dict[str, float]] = {
    "angry": {"AU4": 1.0, "AU5": 0.6, "AU7": 0.8, "AU23": 0.9},
    "disgust": {"AU9": 1.0, "AU10": 0.6, "AU15": 0.7, "AU16": 0.5},
    "fear": {"AU1": 0.9, "AU2": 0.7, "AU4": 0.6, "AU5": 0.9, "AU20": 0.9, "AU25": 0.6, "AU26": 0.6},
    "happy": {"AU6": 0.8, "AU12": 1.0},
    "sad": {"AU1": 1.0, "AU4": 0.6, "AU15": 0.9},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.8, "AU25": 0.8, "AU26": 1.0},
    "neutral": {},
}
# Optional extras: (AU, weight, probability) - e.g. open-mouthed smiles.
_OPTIONAL: dict[str, tuple[tuple[str, float, float], ...]] = {
    "happy": (("AU25", 0.7, 0.4),),
}
_AU_JITTER = 0.15
_REF_SEED = 20_240_501  # fixed seed of the reference sample that standardises rating cues
_REF_SIZE = 4000

_SKIN_PALETTE = np.array(
    [
        [252.0, 224.0, 205.0],
        [236.0, 192.0, 160.0],
        [205.0, 152.0, 114.0],
        [160.0, 110.0, 78.0],
        [125.0, 85.0, 60.0],
    ]
)
_HAIR_NATURAL = (
    (25.0, 20.0, 18.0),
    (60.0, 40.0, 28.0),
    (105.0, 72.0, 45.0),
    (190.0, 150.0, 90.0),
    (150.0, 70.0, 35.0),
    (165.0, 160.0, 155.0),
)
_HAIR_UNUSUAL = (
    (60.0, 90.0, 210.0),
    (220.0, 80.0, 160.0),
    (70.0, 170.0, 90.0),
    (140.0, 70.0, 190.0),
)
_IRIS = ((70.0, 45.0, 30.0), (40.0, 28.0, 20.0), (70.0, 110.0, 160.0), (80.0, 120.0, 80.0))
_HAIR_STYLES = (0, 1, 2, 3)
_HAIR_STYLE_CDF = np.cumsum((0.08, 0.37, 0.35, 0.2))[:-1]  # bald, short, long, fringe


@dataclass(frozen=True)
class SynthSample:
    """One generated face.

    Attributes:
        id: filename-safe sample id, e.g. ``"s000123"``.
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` uint8 region bit flags (``REGION_BITS``).
        aus: ``(len(AUS),)`` float32 action-unit intensities in [0, 1].
        label: index into ``EXPRESSIONS``.
        identity: person id, e.g. ``"p0042"``.
        ratings: ``(40,)`` float32 attribute ratings in [1, 9], ``ATTRIBUTES`` order.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    aus: np.ndarray
    label: int
    identity: str
    ratings: np.ndarray


@dataclass(frozen=True)
class SynthDataset:
    """A generated dataset and its generation report.

    Attributes:
        samples: the faces, identity-major.
        reliability: attribute -> Spearman-Brown split-half rater reliability.
        correlation_mad: mean absolute off-diagonal difference between the synthetic and the
            real inter-attribute correlation matrices.
        images_per_second: measured generation speed (wall clock, whole call).
    """

    samples: list[SynthSample]
    reliability: dict[str, float]
    correlation_mad: float
    images_per_second: float


def _colour(values: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(values, 0.0, 255.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def sample_identity(rng: np.random.Generator, params: SynthParams | None = None) -> Identity:
    """Draw one person.

    Args:
        rng: the only source of randomness (a fixed number of draws per call).
        params: generator parameters (only ``glasses_prob`` is used); default
            ``SynthParams()``.

    Returns:
        A frozen :class:`Identity`.
    """
    params = params or SynthParams()
    # One vector of uniforms, consumed in a fixed order (fast and reproducible).
    draws = iter(rng.random(40).tolist())

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * next(draws)

    def pick(options: Sequence[Colour]) -> Colour:
        return options[min(int(next(draws) * len(options)), len(options) - 1)]

    jitter = rng.normal(0.0, 6.0, 3)
    blemish = float(rng.beta(1.3, 3.0))
    asymmetry = float(rng.beta(1.2, 3.0))
    spot_draws = rng.random((12, 3))
    colours = rng.random((2, 3))

    tone = u(0.0, 1.0)
    pos = tone * (len(_SKIN_PALETTE) - 1)
    i0 = min(int(pos), len(_SKIN_PALETTE) - 2)
    skin = _SKIN_PALETTE[i0] + (pos - i0) * (_SKIN_PALETTE[i0 + 1] - _SKIN_PALETTE[i0]) + jitter
    n_spots = round(blemish * 12)
    spots = tuple(
        (-0.4 + 0.8 * x, -0.45 + 1.0 * y, 0.018 + 0.012 * r)
        for x, y, r in spot_draws[:n_spots].tolist()
    )
    unusual = next(draws) < 0.07
    natural, odd = pick(_HAIR_NATURAL), pick(_HAIR_UNUSUAL)
    hair = np.asarray(odd if unusual else natural) * u(0.85, 1.15)
    lip_mix = u(0.4, 0.6)
    lips = (1.0 - lip_mix) * 0.7 * skin + lip_mix * np.array([170.0, 60.0, 70.0])
    signs = [1.0 if next(draws) < 0.5 else -1.0 for _ in range(3)]
    glasses = next(draws) < params.glasses_prob
    dark_frame = next(draws) < 0.7
    glasses_colour = 10.0 + 110.0 * colours[0] if dark_frame else 255.0 * colours[0]
    style = int(np.searchsorted(_HAIR_STYLE_CDF, next(draws), side="right"))
    return Identity(
        face_width=u(0.5, 0.6),
        face_height=u(0.68, 0.78),
        jaw_power=u(2.0, 3.2),
        chin_taper=u(0.05, 0.3),
        skin_tone=tone,
        skin=_colour(skin),
        blemish=blemish,
        spots=spots,
        eye_size=u(0.85, 1.2),
        eye_spacing=u(0.9, 1.12),
        eye_y=u(-0.03, 0.03),
        eye_open=u(0.8, 1.2),
        iris=pick(_IRIS),
        brow_height=u(0.85, 1.15),
        brow_thickness=u(0.7, 1.4),
        brow_arch=u(0.0, 1.2),
        nose_length=u(0.85, 1.15),
        nose_width=u(0.8, 1.3),
        mouth_width=u(0.85, 1.15),
        lip_thickness=u(0.7, 1.3),
        philtrum=u(0.85, 1.15),
        rest_curve=u(-0.008, 0.008),
        lips=_colour(lips),
        hair_style=_HAIR_STYLES[min(style, len(_HAIR_STYLES) - 1)],
        hair=_colour(hair),
        hair_unusual=unusual,
        hair_volume=u(0.0, 0.1),
        hair_length=u(0.2, 1.0),
        glasses=glasses,
        glasses_colour=_colour(glasses_colour),
        glasses_round=next(draws) < 0.5,
        asymmetry=asymmetry,
        asym_eye=signs[0] * asymmetry * 0.018,
        asym_brow=signs[1] * asymmetry * 0.025,
        asym_mouth=signs[2] * asymmetry * 0.025,
        ear_size=u(0.8, 1.2),
        clothes=_colour(20.0 + 215.0 * colours[1]),
    )


def sample_aus(
    label: int, rng: np.random.Generator, params: SynthParams | None = None
) -> np.ndarray:
    """Draw the action units of one expression.

    Args:
        label: index into ``EXPRESSIONS``.
        rng: randomness (a fixed number of draws per call).
        params: intensity ranges, weak fraction and spurious activations.

    Returns:
        ``(len(AUS),)`` float32 intensities in [0, 1].
    """
    params = params or SynthParams()
    if not 0 <= label < len(EXPRESSIONS):
        raise ValueError(f"label must be in 0..{len(EXPRESSIONS) - 1} ({EXPRESSIONS}), got {label}")
    name = EXPRESSIONS[label]
    weak = rng.random() < params.weak_fraction
    lo, hi = params.weak_range if weak else params.intensity_range
    intensity = rng.uniform(lo, hi)
    jitter = rng.uniform(1.0 - _AU_JITTER, 1.0 + _AU_JITTER, len(AUS))
    spurious_on = rng.random(len(AUS)) < params.spurious_prob
    spurious = rng.uniform(0.0, params.spurious_max, len(AUS)) * spurious_on
    optional_draw = rng.random(len(AUS))
    aus = spurious.copy()
    proto = PROTOTYPES[name]
    for i, au in enumerate(AUS):
        if au in proto:
            aus[i] = proto[au] * intensity * jitter[i]
    for au, weight, prob in _OPTIONAL.get(name, ()):
        i = AUS.index(au)
        if optional_draw[i] < prob:
            aus[i] = max(aus[i], weight * intensity * jitter[i])
    return np.clip(aus, 0.0, 1.0).astype(np.float32)


def sample_nuisance(rng: np.random.Generator, params: SynthParams | None = None) -> Nuisance:
    """Draw the photographic nuisance of one image (pose, light, background, noise, ...).

    Args:
        rng: randomness (a fixed number of draws per call, whatever the outcome).
        params: nuisance strengths.

    Returns:
        A frozen :class:`Nuisance`.
    """
    p = params or SynthParams()
    u = rng.uniform
    rotation = float(u(-p.rotation_deg, p.rotation_deg))
    scale = float(1.0 + u(-p.scale_jitter, p.scale_jitter))
    shift = (float(u(-p.shift, p.shift)), float(u(-p.shift, p.shift)))
    light_strength = float(u(0.0, p.lighting))
    light_angle = float(u(0.0, 2.0 * math.pi))
    exposure = float(u(0.85, 1.12))
    cast = _colour(1.0 + u(-0.06, 0.06, 3))
    background = _colour(u(30.0, 225.0, 3))
    n_clutter = int(rng.poisson(5.0 * p.clutter))
    clutter = tuple(
        (
            float(rng.integers(3)),
            float(u(-1.0, 1.0)),
            float(u(-1.0, 1.0)),
            float(u(0.05, 0.4)),
            float(u(0.05, 0.4)),
            float(u(0.0, math.pi)),
            *(float(c) for c in u(0.0, 255.0, 3)),
        )
        for _ in range(n_clutter)
    )
    occ = (
        float(u(-0.5, 0.5)),
        float(u(-0.5, 0.6)),
        float(u(0.05, 0.11)),
        float(u(0.05, 0.11)),
        float(u(0.0, math.pi)),
        *(float(c) for c in u(0.0, 255.0, 3)),
    )
    occluder = occ if rng.random() < p.occlusion_prob else None
    gaze = (float(u(-1.0, 1.0)), float(u(-1.0, 1.0)))
    blur = float(u(0.3, 0.75))
    blur_sigma = blur if rng.random() < p.blur_prob else 0.0
    noise_std = float(p.noise_std * u(0.3, 1.0))
    return Nuisance(
        rotation=rotation,
        scale=scale,
        shift=shift,
        light_strength=light_strength,
        light_angle=light_angle,
        exposure=exposure,
        cast=cast,
        background=background,
        clutter=clutter,
        occluder=occluder,
        gaze=gaze,
        blur_sigma=blur_sigma,
        noise_std=noise_std,
        noise_seed=int(rng.integers(2**32)),
    )


def _label_plan(n_identities: int, per_identity: int, rng: np.random.Generator) -> np.ndarray:
    """(n_identities, per_identity) labels: each identity walks a shuffled cycle of classes."""
    n_cls = len(EXPRESSIONS)
    reps = -(-per_identity // n_cls)
    return np.stack(
        [
            np.concatenate([rng.permutation(n_cls) for _ in range(reps)])[:per_identity]
            for _ in range(n_identities)
        ]
    )


# Params that shape the distribution of rating cues (the reference sample depends on these only).
_CUE_FIELDS = (
    "intensity_range",
    "weak_fraction",
    "weak_range",
    "spurious_prob",
    "spurious_max",
    "glasses_prob",
)


def _reference_cues(params: SynthParams) -> np.ndarray:
    """Rating cues of a fixed reference sample drawn like ``params`` (standardisation)."""
    return _reference_cues_cached(SynthParams(**{k: getattr(params, k) for k in _CUE_FIELDS}))


@cache
def _reference_cues_cached(params: SynthParams) -> np.ndarray:
    rng = np.random.default_rng(_REF_SEED)
    labels = rng.integers(len(EXPRESSIONS), size=_REF_SIZE)
    identities = [sample_identity(rng, params) for _ in range(_REF_SIZE)]
    aus = np.stack([sample_aus(int(lab), rng, params) for lab in labels])
    return face_cues(aus, identities)


def generate(
    params: SynthParams,
    image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> SynthDataset:
    """Generate the SynthFACS dataset.

    Args:
        params: the generator parameters (same params, same bytes).
        image_size: side of the square images in pixels (>= 16).
        progress: called as ``progress(done, total)`` while rendering.

    Returns:
        The samples (identity-major: ``s000000``..), the split-half rater reliability per
        attribute, the correlation MAD against the real ratings and the measured speed.

    Raises:
        ValueError: ``image_size`` < 16.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}; use e.g. 64")
    start = time.perf_counter()
    root = np.random.SeedSequence(params.seed)
    id_seq, sample_seq, plan_seq, rater_seq = root.spawn(4)
    n_id, per_id = params.n_identities, params.expressions_per_identity
    total = n_id * per_id
    identities = [sample_identity(np.random.default_rng(s), params) for s in id_seq.spawn(n_id)]
    plan = _label_plan(n_id, per_id, np.random.default_rng(plan_seq))
    sample_seeds = sample_seq.spawn(total)
    id_width = max(4, len(str(n_id - 1)))
    s_width = max(6, len(str(total - 1)))

    rendered = []
    all_aus = np.empty((total, len(AUS)), np.float32)
    sample_identities: list[Identity] = []
    for i in range(total):
        p, j = divmod(i, per_id)
        rng = np.random.default_rng(sample_seeds[i])
        label = int(plan[p, j])
        aus = sample_aus(label, rng, params)
        nuisance = sample_nuisance(rng, params)
        image, mask = render_face(aus, identities[p], nuisance, image_size)
        rendered.append((f"s{i:0{s_width}d}", image, mask, aus, label, f"p{p:0{id_width}d}"))
        all_aus[i] = aus
        sample_identities.append(identities[p])
        if progress is not None and ((i + 1) % 64 == 0 or i + 1 == total):
            progress(i + 1, total)

    rater_rng = np.random.default_rng(rater_seq)
    ratings, individual = rate(
        all_aus,
        sample_identities,
        _reference_cues(params),
        rater_rng,
        n_raters=params.n_raters,
        rater_noise=params.rater_noise,
        rater_bias=params.rater_bias,
        face_signal=params.face_signal,
    )
    if total >= 3:
        rel = split_half_reliability(individual, rater_rng)
        mad = correlation_mad(ratings)
    else:
        rel, mad = np.full(len(ATTRIBUTES), np.nan), float("nan")
    samples = [
        SynthSample(
            id=sid, image=img, mask=msk, aus=au, label=lab, identity=pid, ratings=ratings[i]
        )
        for i, (sid, img, msk, au, lab, pid) in enumerate(rendered)
    ]
    elapsed = max(time.perf_counter() - start, 1e-9)
    return SynthDataset(
        samples=samples,
        reliability={a: float(r) for a, r in zip(ATTRIBUTES, rel, strict=True)},
        correlation_mad=mad,
        images_per_second=total / elapsed,
    )


def preview_grid(samples: Sequence[SynthSample], n_per_class: int = 4) -> Figure:
    """A grid of example faces, one row per expression class (never saved here).

    Args:
        samples: generated samples (the first ``n_per_class`` of each class are shown).
        n_per_class: columns.

    Returns:
        A matplotlib Figure (no pyplot state involved); save it with ``fig.savefig``.
    """
    from matplotlib.figure import Figure

    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    rows = len(EXPRESSIONS)
    fig = Figure(figsize=(1.3 * n_per_class + 0.8, 1.3 * rows), layout="constrained")
    axes = fig.subplots(rows, n_per_class, squeeze=False)
    for r, name in enumerate(EXPRESSIONS):
        chosen = [s for s in samples if s.label == r][:n_per_class]
        for c in range(n_per_class):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(chosen):
                ax.imshow(chosen[c].image, interpolation="nearest")
                ax.set_title(chosen[c].id, fontsize=6)
            else:
                ax.set_axis_off()
        axes[r][0].set_ylabel(name, fontsize=9)
    return fig
