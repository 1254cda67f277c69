"""The SynthFACS dataset generator: identities x expressions -> rendered, rated samples.

Every random draw comes from one ``numpy.random.SeedSequence(params.seed)`` spawned into
identities, per-sample streams (AUs, then nuisance), the label plan and the raters, so the same
:class:`~facelens.data.synthfacs.params.SynthParams` give byte-identical images.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.synthfacs.action_units import AUS, sample_aus
from facelens.data.synthfacs.cues import face_cues
from facelens.data.synthfacs.identity import Identity, sample_identity
from facelens.data.synthfacs.nuisance import sample_nuisance
from facelens.data.synthfacs.params import SynthParams
from facelens.data.synthfacs.ratings import correlation_mad, rate, split_half_reliability
from facelens.data.synthfacs.render import render_face
from facelens.errors import ConfigError

__all__ = ["SynthDataset", "SynthSample", "generate"]

_REF_SEED = 20_240_501  # fixed seed of the reference sample that standardises rating cues
_REF_SIZE = 4000  # faces in that reference sample
_MIN_IMAGE_SIZE = 16
_PROGRESS_EVERY = 64  # samples between progress callbacks

# Params that shape the distribution of rating cues (the reference sample depends on these only).
_CUE_FIELDS = (
    "intensity_range",
    "weak_fraction",
    "weak_range",
    "spurious_prob",
    "spurious_max",
    "glasses_prob",
)

# One rendered sample before rating: (id, image, mask, aus, label, identity id).
_Rendered = tuple[str, np.ndarray, np.ndarray, np.ndarray, int, str]


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


def _render_samples(
    params: SynthParams,
    image_size: int,
    identities: Sequence[Identity],
    plan: np.ndarray,
    sample_seeds: Sequence[np.random.SeedSequence],
    progress: Callable[[int, int], None] | None,
    prefix: str = "",
) -> tuple[list[_Rendered], np.ndarray, list[Identity]]:
    """Draw the AUs and nuisance of every sample and render it (identity-major order).

    Returns:
        The rendered samples, their ``(N, len(AUS))`` AUs and the identity of each.
    """
    n_id, per_id = params.n_identities, params.expressions_per_identity
    total = n_id * per_id
    id_width = max(4, len(str(n_id - 1)))
    s_width = max(6, len(str(total - 1)))
    rendered: list[_Rendered] = []
    all_aus = np.empty((total, len(AUS)), np.float32)
    sample_identities: list[Identity] = []
    for i in range(total):
        p, j = divmod(i, per_id)
        rng = np.random.default_rng(sample_seeds[i])
        label = int(plan[p, j])
        aus = sample_aus(label, rng, params)
        nuisance = sample_nuisance(rng, params)
        image, mask = render_face(aus, identities[p], nuisance, image_size)
        sid, pid = f"{prefix}s{i:0{s_width}d}", f"{prefix}p{p:0{id_width}d}"
        rendered.append((sid, image, mask, aus, label, pid))
        all_aus[i] = aus
        sample_identities.append(identities[p])
        if progress is not None and ((i + 1) % _PROGRESS_EVERY == 0 or i + 1 == total):
            progress(i + 1, total)
    return rendered, all_aus, sample_identities


def _rate_samples(
    params: SynthParams,
    all_aus: np.ndarray,
    sample_identities: list[Identity],
    rater_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Simulated ratings ``(N, 40)``, split-half reliability ``(40,)`` and correlation MAD."""
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
    if len(sample_identities) >= 3:
        rel = split_half_reliability(individual, rater_rng)
        mad = correlation_mad(ratings)
    else:
        rel, mad = np.full(len(ATTRIBUTES), np.nan), float("nan")
    return ratings, rel, mad


def _root_seed(seed: int, namespace: str) -> np.random.SeedSequence:
    """The root of every draw: ``SeedSequence(seed)`` for the task's data, and for a
    namespace (the pretraining pool's ``pre-``) a sequence keyed on the namespace too, so
    its identities come from a stream the task's data never draws from, whatever the seeds."""
    if not namespace:
        return np.random.SeedSequence(seed)
    key = int.from_bytes(hashlib.sha256(namespace.encode()).digest()[:8], "little")
    return np.random.SeedSequence([seed, key])


def generate(
    params: SynthParams,
    image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    *,
    namespace: str = "",
) -> SynthDataset:
    """Generate the SynthFACS dataset.

    Args:
        params: the generator parameters (same params, same bytes).
        image_size: side of the square images in pixels (>= 16).
        progress: called as ``progress(done, total)`` while rendering.
        namespace: prefix of every sample and identity id (``pre-`` gives ``pre-p0001``),
            drawn from its own seed stream (see :func:`_root_seed`): a pool of other people.

    Returns:
        The samples (identity-major: ``s000000``..), the split-half rater reliability per
        attribute, the correlation MAD against the real ratings and the measured speed.

    Raises:
        ConfigError: ``image_size`` < 16.
    """
    if image_size < _MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be >= 16 pixels, got {image_size}; use e.g. 64")
    start = time.perf_counter()
    root = _root_seed(params.seed, namespace)
    id_seq, sample_seq, plan_seq, rater_seq = root.spawn(4)
    n_id, per_id = params.n_identities, params.expressions_per_identity
    total = n_id * per_id
    identities = [sample_identity(np.random.default_rng(s), params) for s in id_seq.spawn(n_id)]
    plan = _label_plan(n_id, per_id, np.random.default_rng(plan_seq))
    sample_seeds = sample_seq.spawn(total)
    rendered, all_aus, sample_identities = _render_samples(
        params, image_size, identities, plan, sample_seeds, progress, namespace
    )
    ratings, rel, mad = _rate_samples(
        params, all_aus, sample_identities, np.random.default_rng(rater_seq)
    )
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
