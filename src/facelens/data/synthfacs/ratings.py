"""SynthFACS attribute ratings: face -> latent impressions -> 40 attributes -> simulated raters.

Generative model (all steps deterministic given the seed):

1. **Face cues** (:mod:`.cues`): 18 cues per sample from its action units and its identity,
   each z-scored with the moments of a fixed reference sample drawn from the same
   parameters, so one face's ratings do not depend on the rest of the dataset.
2. **Latent impressions** (``TRAITS``), weighted sums of z-scored cues (``_TRAIT_WEIGHTS``):
   *warmth* (valence; babyfaceness = large eyes + round face; minus width-to-height ratio,
   i.e. wide faces look dominant/aggressive), *attractiveness* (averageness = low
   extremeness, symmetry, smooth skin, smile, hair), *competence* (glasses, calm = low
   arousal, long face), *insecurity* (worry, close-set eyes, thin brows) and
   *distinctiveness* (unusual hair, glasses, extremeness, baldness). The five impressions
   are standardised and whitened (ZCA, reference covariance) into uncorrelated unit-variance
   factors ``F``; the latent factors are ``f = sqrt(s) F + sqrt(1 - s) eps`` with
   ``s = face_signal`` (the part of each factor the image cannot show is ``eps``).
3. **Attributes.** A 5-factor loading matrix ``L`` (40 x 5) comes from the eigendecomposition
   of the real inter-attribute correlation matrix (``reference_stats()['correlation']``,
   principal components scaled by the square root of their eigenvalues), varimax-rotated and
   matched to the impressions by anchor attributes (friendly, attractive, intelligent,
   unintelligent, atypical; Hungarian assignment, sign making the anchor positive). The
   true standardised score is ``t = L f + sqrt(u) e`` where ``h2 = rowsum(L**2)`` is the
   communality, the target reliability is ``rel = clip(h2 + (1 - h2) / 4, 0.55, 0.9)`` and
   ``u = max(rel - h2, 0)`` is unique true variance. ``L L^T`` reproduces the real
   off-diagonal correlations (mean absolute error 0.024 at population level).
4. **Raters.** Each of ``n_raters`` raters ``r`` rates ``mu_a + sd_a (t + n_r) + b_ra`` with
   real mean ``mu_a`` and standard deviation ``sd_a``, per-rating noise
   ``n_r ~ N(0, rater_noise^2 * 12 * (1 - rel))`` (so that 12 raters reach reliability
   ``rel``; the mean-rating variance stays ~1, hence ``sd_a``) and a per-rater,
   per-attribute bias ``b_ra ~ N(0, rater_bias^2)`` centred over raters. The rating is the
   mean over raters, clipped to [1, 9].
5. **Reliability.** Per attribute, raters are split into two random halves; the Pearson r
   between half means across images is Spearman-Brown corrected, ``2r / (1 + r)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from scipy.optimize import linear_sum_assignment

from facelens.constants import ATTRIBUTES, reference_stats
from facelens.data.synthfacs.cues import CUES, face_cues
from facelens.data.synthfacs.identity import Identity

__all__ = [
    "TRAITS",
    "attribute_model",
    "correlation_mad",
    "rate",
    "split_half_reliability",
]

TRAITS: tuple[str, ...] = (
    "warmth",
    "attractiveness",
    "competence",
    "insecurity",
    "distinctiveness",
)
_ANCHORS: tuple[str, ...] = ("friendly", "attractive", "intelligent", "unintelligent", "atypical")


#: cue -> weight per trait (TRAITS order); z-scored cues, so weights are comparable.
_TRAIT_WEIGHTS: dict[str, tuple[float, float, float, float, float]] = {
    "valence": (0.9, 0.0, 0.0, 0.0, 0.0),
    "eye_size": (0.15, 0.0, 0.0, 0.0, 0.0),
    "roundness": (0.15, 0.0, 0.0, 0.0, 0.0),
    "fwhr": (-0.2, 0.0, 0.0, 0.0, 0.0),
    "rest_smile": (0.1, 0.0, 0.0, 0.0, 0.0),
    "smile": (0.0, 0.5, 0.0, 0.0, 0.0),
    "blemish": (0.0, -0.5, 0.0, 0.0, 0.0),
    "hair": (0.0, 0.3, 0.0, 0.0, 0.0),
    "asymmetry": (0.0, -0.25, 0.0, 0.0, 0.0),
    "extremeness": (0.0, -0.2, 0.0, 0.0, 0.3),
    "glasses": (0.0, 0.0, 0.6, 0.0, 0.45),
    "arousal": (0.0, 0.0, -0.6, 0.0, 0.0),
    "face_length": (0.0, 0.0, 0.1, 0.0, 0.0),
    "worry": (0.0, 0.0, 0.0, 0.7, 0.0),
    "eye_spacing": (0.0, 0.0, 0.0, -0.3, 0.0),
    "brow_thickness": (0.0, 0.0, 0.0, -0.3, 0.0),
    "hair_unusual": (0.0, 0.0, 0.0, 0.0, 0.55),
    "bald": (0.0, 0.0, 0.0, 0.0, 0.45),
}

_K_REF = 12  # raters at which the per-rater noise reaches the target reliability


def _varimax(loadings: np.ndarray, iterations: int = 500, tol: float = 1e-10) -> np.ndarray:
    p, k = loadings.shape
    rot = np.eye(k)
    crit = 0.0
    for _ in range(iterations):
        lam = loadings @ rot
        u, s, vt = np.linalg.svd(loadings.T @ (lam**3 - lam @ np.diag(np.diag(lam.T @ lam)) / p))
        rot = u @ vt
        crit_old, crit = crit, float(np.sum(s))
        if crit_old and crit / crit_old < 1.0 + tol:
            break
    return loadings @ rot


@cache
def attribute_model() -> dict[str, np.ndarray]:
    """The calibrated attribute model of step 3 (cached; derived from the reference file).

    Returns:
        Dict with ``loadings`` (40, 5) in ``TRAITS`` column order, ``communality`` (40,),
        ``reliability`` (40,) target reliability with 12 raters, ``unique`` (40,) unique true
        variance, ``mean`` (40,), ``std`` (40,) and ``correlation`` (40, 40) of the real data.
    """
    ref = reference_stats()
    attrs = list(ref["attributes"])
    corr = np.asarray(ref["correlation"], dtype=np.float64)
    evals, evecs = np.linalg.eigh(corr)
    order = np.argsort(evals)[::-1][: len(TRAITS)]
    loadings = _varimax(evecs[:, order] * np.sqrt(evals[order]))
    anchor_rows = [attrs.index(a) for a in _ANCHORS]
    _, cols = linear_sum_assignment(-np.abs(loadings[anchor_rows]))
    loadings = loadings[:, cols]
    signs = np.sign(loadings[anchor_rows, np.arange(len(TRAITS))])
    loadings = loadings * signs
    communality = np.sum(loadings**2, axis=1)
    reliability = np.clip(communality + (1.0 - communality) / 4.0, 0.55, 0.9)
    unique = np.maximum(reliability - communality, 0.0)
    return {
        "loadings": loadings,
        "communality": communality,
        "reliability": reliability,
        "unique": unique,
        "mean": np.array([ref["mean"][a] for a in attrs], dtype=np.float64),
        "std": np.array([ref["std"][a] for a in attrs], dtype=np.float64),
        "correlation": corr,
    }


def _whitener(ref_cues: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference moments: cue mean/std, trait mean, ZCA whitening matrix of the traits."""
    mu = ref_cues.mean(axis=0)
    sd = ref_cues.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    weights = np.array([_TRAIT_WEIGHTS.get(c, (0.0,) * len(TRAITS)) for c in CUES])
    traits = ((ref_cues - mu) / sd) @ weights
    t_mu = traits.mean(axis=0)
    cov = np.cov(traits - t_mu, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    zca = evecs @ np.diag(1.0 / np.sqrt(np.maximum(evals, 1e-9))) @ evecs.T
    return mu, sd, t_mu, zca


def latent_factors(cues: np.ndarray, ref_cues: np.ndarray) -> np.ndarray:
    """Whitened face-driven impressions ``F`` (N, 5), unit variance on the reference sample."""
    mu, sd, t_mu, zca = _whitener(ref_cues)
    weights = np.array([_TRAIT_WEIGHTS.get(c, (0.0,) * len(TRAITS)) for c in CUES])
    traits = ((cues - mu) / sd) @ weights
    return (traits - t_mu) @ zca


def split_half_reliability(ratings: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spearman-Brown corrected split-half reliability per attribute.

    Args:
        ratings: ``(N, K, A)`` individual ratings (images, raters, attributes), K >= 2.
        rng: draws the random halves.

    Returns:
        ``(A,)`` reliabilities ``2r / (1 + r)`` (NaN where a half is constant).
    """
    n, k, _ = ratings.shape
    if k < 2 or n < 3:
        raise ValueError(
            f"need >= 2 raters and >= 3 images for split-half reliability, got {ratings.shape}"
        )
    perm = rng.permutation(k)
    h1 = ratings[:, perm[: k // 2], :].mean(axis=1)
    h2 = ratings[:, perm[k // 2 :], :].mean(axis=1)
    h1 = h1 - h1.mean(axis=0)
    h2 = h2 - h2.mean(axis=0)
    denom = np.sqrt((h1**2).sum(axis=0) * (h2**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (h1 * h2).sum(axis=0) / denom
        return 2.0 * r / (1.0 + r)


def correlation_mad(ratings: np.ndarray) -> float:
    """Mean absolute off-diagonal difference between the ratings' and the real correlations."""
    real = attribute_model()["correlation"]
    synth = np.corrcoef(np.asarray(ratings, dtype=np.float64), rowvar=False)
    off = ~np.eye(real.shape[0], dtype=bool)
    return float(np.nanmean(np.abs(synth - real)[off]))


def rate(
    aus: np.ndarray,
    identities: Sequence[Identity],
    ref_cues: np.ndarray,
    rng: np.random.Generator,
    *,
    n_raters: int,
    rater_noise: float,
    rater_bias: float,
    face_signal: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the raters (steps 2-4 of the module docstring).

    Args:
        aus: ``(N, len(AUS))`` action units.
        identities: N identities.
        ref_cues: ``(M, 18)`` cues of the reference sample (standardisation, whitening).
        rng: randomness for latent noise, unique noise, rater noise and bias.
        n_raters: raters per image.
        rater_noise: multiplier of the calibrated per-rating noise.
        rater_bias: std of the per-rater bias, rating units.
        face_signal: share of latent-factor variance determined by the face.

    Returns:
        ``(ratings, individual)``: ``(N, 40)`` float32 mean ratings clipped to [1, 9], and the
        ``(N, n_raters, 40)`` float32 individual ratings (for reliability).
    """
    model = attribute_model()
    n = len(identities)
    k = len(TRAITS)
    n_attr = len(ATTRIBUTES)
    faces = latent_factors(face_cues(aus, identities), ref_cues)
    eps = rng.standard_normal((n, k))
    f = np.sqrt(face_signal) * faces + np.sqrt(1.0 - face_signal) * eps
    true = f @ model["loadings"].T + np.sqrt(model["unique"]) * rng.standard_normal((n, n_attr))
    noise_sd = rater_noise * np.sqrt(_K_REF * (1.0 - model["reliability"]))
    noise = rng.standard_normal((n, n_raters, n_attr)) * noise_sd
    bias = rng.standard_normal((n_raters, n_attr)) * rater_bias
    bias -= bias.mean(axis=0, keepdims=True)
    individual = model["mean"] + model["std"] * (true[:, None, :] + noise) + bias[None]
    ratings = np.clip(individual.mean(axis=1), 1.0, 9.0)
    return ratings.astype(np.float32), individual.astype(np.float32)
