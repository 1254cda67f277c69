"""SynthFACS contract: determinism, masks aligned with drawn parts, AU geometry, ratings,
calibration, and the difficulty guard (not trivial from pixels, recoverable from AUs)."""

from __future__ import annotations

import dataclasses

import numpy as np

from facelens.constants import ATTRIBUTES, EXPRESSIONS, REGION_BITS
from facelens.data.synthfacs.action_units import AUS
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.identity import sample_identity
from facelens.data.synthfacs.nuisance import sample_nuisance
from facelens.data.synthfacs.params import SynthParams
from facelens.data.synthfacs.preview import preview_grid
from facelens.data.synthfacs.render import render_face

SMALL = SynthParams(n_identities=4, expressions_per_identity=7, seed=3)


def _aus(**values: float) -> np.ndarray:
    a = np.zeros(len(AUS), np.float32)
    for name, v in values.items():
        a[AUS.index(name)] = v
    return a


def _clean_setup(seed: int = 0):
    """An identity and a photograph without nuisance, so pixel changes come from AUs only."""
    rng = np.random.default_rng(seed)
    idn = sample_identity(rng, SynthParams())
    idn = dataclasses.replace(idn, glasses=False) if hasattr(idn, "glasses") else idn
    quiet = SynthParams(
        rotation_deg=0.0,
        shift=0.0,
        scale_jitter=0.0,
        lighting=0.0,
        clutter=0.0,
        noise_std=0.0,
        blur_prob=0.0,
        occlusion_prob=0.0,
    )
    nuisance = sample_nuisance(np.random.default_rng(seed + 1), quiet)
    return idn, nuisance


def _bits(mask: np.ndarray, region: str) -> np.ndarray:
    return (mask & REGION_BITS[region]) > 0


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(m, dy, 0), dx, 1)
    return out


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    a, b = generate(SMALL, image_size=48), generate(SMALL, image_size=48)
    assert len(a.samples) == len(b.samples) == 28
    for x, y in zip(a.samples, b.samples, strict=True):
        assert x.id == y.id and x.label == y.label and x.identity == y.identity
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
        assert np.array_equal(x.aus, y.aus) and np.array_equal(x.ratings, y.ratings)
    c = generate(SMALL.model_copy(update={"seed": 4}), image_size=48)
    assert not np.array_equal(a.samples[0].image, c.samples[0].image)


def test_sample_structure_labels_identities_ratings() -> None:
    ds = generate(SMALL, image_size=48)
    s = ds.samples[0]
    assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (48, 48) and s.mask.dtype == np.uint8
    assert s.aus.shape == (len(AUS),) and s.aus.min() >= 0.0 and s.aus.max() <= 1.0
    assert {x.label for x in ds.samples} == set(range(len(EXPRESSIONS)))
    per_identity: dict[str, set[int]] = {}
    for x in ds.samples:
        per_identity.setdefault(x.identity, set()).add(x.label)
    assert len(per_identity) == 4 and all(len(v) == 7 for v in per_identity.values())
    ratings = np.stack([x.ratings for x in ds.samples])
    assert ratings.shape == (28, len(ATTRIBUTES))
    assert ratings.min() >= 1.0 and ratings.max() <= 9.0
    assert set(ds.reliability) == set(ATTRIBUTES)


def test_parts_lie_inside_the_face_and_every_region_is_drawn() -> None:
    idn, nuisance = _clean_setup()
    _, mask = render_face(_aus(), idn, nuisance, 64)
    face = _bits(mask, "face")
    for region in ("brows", "eyes", "nose", "mouth"):
        part = _bits(mask, region)
        assert part.sum() > 0, region
        # parts sit on the face (allow a one-pixel rim for anti-aliased outlines)
        assert (part & ~_dilate(face, 1)).sum() <= 0.05 * part.sum(), region


def test_smile_changes_pixels_at_the_mouth_mask() -> None:
    idn, nuisance = _clean_setup()
    neutral, mask = render_face(_aus(), idn, nuisance, 64)
    smile, mask_smile = render_face(_aus(AU12=1.0), idn, nuisance, 64)
    changed = np.abs(neutral.astype(int) - smile.astype(int)).sum(axis=2) > 20
    assert changed.sum() > 10
    mouth = _dilate(_bits(mask, "mouth") | _bits(mask_smile, "mouth"), 3)
    assert (changed & mouth).sum() >= 0.8 * changed.sum()


def test_brow_lowering_changes_pixels_at_the_brows() -> None:
    idn, nuisance = _clean_setup(5)
    neutral, mask = render_face(_aus(), idn, nuisance, 64)
    frown, mask_frown = render_face(_aus(AU4=1.0), idn, nuisance, 64)
    changed = np.abs(neutral.astype(int) - frown.astype(int)).sum(axis=2) > 20
    assert changed.sum() > 5
    upper = _dilate(
        _bits(mask, "brows") | _bits(mask_frown, "brows") | _bits(mask, "eyes"), 3
    ) | _dilate(_bits(mask, "nose"), 1)
    assert (changed & upper).sum() >= 0.8 * changed.sum()


def test_jaw_drop_opens_the_mouth() -> None:
    idn, nuisance = _clean_setup(2)
    areas = [
        _bits(render_face(_aus(AU25=v, AU26=v), idn, nuisance, 64)[1], "mouth").sum()
        for v in (0.0, 0.5, 1.0)
    ]
    assert areas[0] < areas[1] < areas[2]


def test_smile_raises_the_lip_corners() -> None:
    idn, nuisance = _clean_setup(4)

    def corner_height(aus: np.ndarray) -> float:
        mouth = _bits(render_face(aus, idn, nuisance, 96)[1], "mouth")
        ys, xs = np.nonzero(mouth)
        left = ys[xs <= xs.min() + 1].mean()
        right = ys[xs >= xs.max() - 1].mean()
        return float((left + right) / 2 - ys.mean())  # image y grows downwards

    assert corner_height(_aus(AU12=1.0)) < corner_height(_aus(AU15=1.0))


def test_calibration_and_reliability() -> None:
    ds = generate(SynthParams(n_identities=100), image_size=32)
    assert ds.correlation_mad <= 0.15
    rel = np.array(list(ds.reliability.values()))
    assert np.all(rel > 0.2) and np.all(rel < 1.0)
    assert ds.images_per_second > 0


def test_preview_grid_is_labelled() -> None:
    fig = preview_grid(generate(SMALL, image_size=32).samples, n_per_class=2)
    texts = " ".join(t.get_text() for ax in fig.axes for t in [ax.title, ax.yaxis.label])
    texts += " ".join(t.get_text() for t in fig.texts)
    assert any(name in texts for name in EXPRESSIONS)
