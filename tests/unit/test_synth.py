"""SynthFACS: determinism, mask alignment, AU geometry, labels, ratings and the difficulty guard."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from facelens.constants import ATTRIBUTES, EXPRESSIONS, REGION_BITS
from facelens.data.synthfacs.action_units import AUS, PROTOTYPES, sample_aus
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.geometry import face_geometry
from facelens.data.synthfacs.identity import Identity, sample_identity
from facelens.data.synthfacs.nuisance import Nuisance, sample_nuisance
from facelens.data.synthfacs.params import SynthParams
from facelens.data.synthfacs.preview import preview_grid
from facelens.data.synthfacs.render import render_face

FACE, BROWS, EYES, NOSE, MOUTH = (
    REGION_BITS[r] for r in ("face", "brows", "eyes", "nose", "mouth")
)
PARTS = BROWS | EYES | NOSE | MOUTH


def _aus(**values: float) -> np.ndarray:
    a = np.zeros(len(AUS), np.float32)
    for name, v in values.items():
        a[AUS.index(name)] = v
    return a


def _identity(seed: int = 1, **changes: object) -> Identity:
    idn = sample_identity(np.random.default_rng(seed), SynthParams(glasses_prob=0.0))
    return replace(idn, **changes)


def _clean(**changes: object) -> Nuisance:
    """A photograph without clutter, light, blur, noise or occluder (pose via ``changes``)."""
    quiet = SynthParams(
        rotation_deg=0, shift=0, scale_jitter=0, lighting=0, clutter=0, noise_std=0,
        blur_prob=0, occlusion_prob=0,
    )  # fmt: skip
    base = sample_nuisance(np.random.default_rng(0), quiet)
    return replace(base, exposure=1.0, cast=(1.0, 1.0, 1.0), gaze=(0.0, 0.0), **changes)


@pytest.fixture(scope="module")
def small() -> object:
    return generate(SynthParams(n_identities=12, seed=3), image_size=48)


@pytest.fixture(scope="module")
def medium() -> object:
    return generate(SynthParams(n_identities=60, seed=5), image_size=32)


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_differs() -> None:
    params = SynthParams(n_identities=3, expressions_per_identity=3, seed=11)
    a = generate(params, image_size=32)
    b = generate(params, image_size=32)
    c = generate(params.model_copy(update={"seed": 12}), image_size=32)
    for sa, sb in zip(a.samples, b.samples, strict=True):
        assert sa.id == sb.id and sa.label == sb.label and sa.identity == sb.identity
        assert sa.image.tobytes() == sb.image.tobytes()
        assert sa.mask.tobytes() == sb.mask.tobytes()
        np.testing.assert_array_equal(sa.aus, sb.aus)
        np.testing.assert_array_equal(sa.ratings, sb.ratings)
    assert any(
        sa.image.tobytes() != sc.image.tobytes()
        for sa, sc in zip(a.samples, c.samples, strict=True)
    )
    assert not np.array_equal(a.samples[0].ratings, c.samples[0].ratings)


def test_render_face_is_pure() -> None:
    aus = _aus(AU12=0.8, AU6=0.6)
    before = aus.copy()
    idn = _identity()
    nz = sample_nuisance(np.random.default_rng(4), SynthParams())
    img1, mask1 = render_face(aus, idn, nz, 40)
    img2, mask2 = render_face(aus, idn, nz, 40)
    np.testing.assert_array_equal(aus, before)
    assert img1.shape == (40, 40, 3) and img1.dtype == np.uint8
    assert mask1.shape == (40, 40) and mask1.dtype == np.uint8
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(mask1, mask2)


def test_generate_matches_render_face() -> None:
    """``generate`` is ``render_face`` over the sampled inputs (no hidden state)."""
    ds = generate(SynthParams(n_identities=1, expressions_per_identity=2, seed=9), image_size=32)
    s = ds.samples[1]
    root = np.random.SeedSequence(9)
    id_seq, sample_seq, _, _ = root.spawn(4)
    idn = sample_identity(np.random.default_rng(id_seq.spawn(1)[0]), SynthParams(seed=9))
    rng = np.random.default_rng(sample_seq.spawn(2)[1])
    aus = sample_aus(s.label, rng, SynthParams(seed=9))
    img, mask = render_face(aus, idn, sample_nuisance(rng, SynthParams(seed=9)), 32)
    np.testing.assert_array_equal(aus, s.aus)
    np.testing.assert_array_equal(img, s.image)
    np.testing.assert_array_equal(mask, s.mask)


# --- masks ---------------------------------------------------------------------------------


def test_region_masks_lie_inside_face_mask(small) -> None:
    seen = 0
    for s in small.samples:
        parts = (s.mask & PARTS) > 0
        assert not np.any(parts & ((s.mask & FACE) == 0)), s.id
        seen |= int(np.bitwise_or.reduce(s.mask.ravel()))
    assert seen == FACE | PARTS  # every region occurs somewhere


def test_mouth_mask_covers_lip_coloured_pixels() -> None:
    idn = _identity(spots=())
    img, mask = render_face(_aus(AU25=0.6, AU26=0.5), idn, _clean(), 64)
    skin = np.asarray(idn.skin)
    dist = np.linalg.norm(img.astype(float) - skin, axis=2)
    mouth = (mask & MOUTH) > 0
    face_only = ndimage.binary_erosion(mask == FACE, iterations=2)
    assert mouth.sum() > 20
    assert np.median(dist[mouth]) > 40  # lips / opening are not skin
    assert np.median(dist[face_only]) < 8  # plain face pixels are skin


@pytest.mark.parametrize(
    ("au", "region"),
    [("AU23", MOUTH), ("AU25", MOUTH), ("AU15", MOUTH), ("AU5", EYES), ("AU7", EYES)],
)
def test_au_changes_pixels_only_near_its_region(au: str, region: int) -> None:
    """Changing one AU moves pixels only next to the part it drives, under a rotated pose."""
    idn = _identity(seed=2, spots=())
    nz = _clean(rotation=17.0, shift=(0.06, -0.05), scale=1.05)
    img0, mask0 = render_face(_aus(), idn, nz, 64)
    img1, mask1 = render_face(_aus(**{au: 1.0}), idn, nz, 64)
    changed = np.abs(img0.astype(int) - img1.astype(int)).max(axis=2) > 12
    near = ndimage.binary_dilation(((mask0 | mask1) & region) > 0, iterations=3)
    assert changed.sum() > 10
    assert not np.any(changed & ~near)


def test_masks_follow_the_pose() -> None:
    idn = _identity(seed=3)
    _, m0 = render_face(_aus(), idn, _clean(), 64)
    _, m1 = render_face(_aus(), idn, _clean(shift=(0.25, 0.0)), 64)
    c0 = ndimage.center_of_mass((m0 & EYES) > 0)
    c1 = ndimage.center_of_mass((m1 & EYES) > 0)
    assert c1[1] - c0[1] == pytest.approx(0.25 * 32 * 1.08, abs=1.0)  # columns move right
    assert c1[0] == pytest.approx(c0[0], abs=0.5)


# --- AU -> geometry ------------------------------------------------------------------------


def test_jaw_drop_opens_the_mouth() -> None:
    idn = _identity()
    areas, dark = [], []
    for v in (0.0, 0.5, 1.0):
        img, mask = render_face(_aus(AU25=v, AU26=v), idn, _clean(), 64)
        mouth = (mask & MOUTH) > 0
        areas.append(int(mouth.sum()))
        dark.append(int((mouth & (img.sum(axis=2) < 200)).sum()))
    assert areas[0] < areas[1] < areas[2]
    assert dark[0] < dark[1] < dark[2]


def test_smile_raises_and_frown_lowers_lip_corners() -> None:
    idn = _identity()
    y0 = face_geometry(_aus(), idn)["mouth_corners"][0][:, 1]
    y12 = face_geometry(_aus(AU12=1.0), idn)["mouth_corners"][0][:, 1]
    y15 = face_geometry(_aus(AU15=1.0), idn)["mouth_corners"][0][:, 1]
    assert np.all(y12 < y0 - 0.05)  # y points down: raised corners
    assert np.all(y15 > y0 + 0.05)


def test_brow_actions() -> None:
    idn = _identity()

    def inner_outer(**au: float) -> tuple[float, float]:
        right = face_geometry(_aus(**au), idn)["brows"][1]
        half = len(right) // 2  # stroke: upper edge inner->outer, then lower edge back
        return float(right[:3, 1].mean()), float(right[half - 3 : half, 1].mean())

    inner0, outer0 = inner_outer()
    inner1, outer1 = inner_outer(AU1=1.0)
    inner2, outer2 = inner_outer(AU2=1.0)
    inner4, _ = inner_outer(AU4=1.0)
    assert inner1 < inner0 - 0.08 and abs(outer1 - outer0) < 0.03
    assert outer2 < outer0 - 0.06 and abs(inner2 - inner0) < 0.03
    assert inner4 > inner0 + 0.06


def test_lid_actions_change_eye_opening() -> None:
    idn = _identity()

    def height(**au: float) -> float:
        eye = face_geometry(_aus(**au), idn)["eyes"][0]
        return float(np.ptp(eye[:, 1]))

    assert height(AU5=1.0) > 1.5 * height()
    assert height(AU7=1.0) < 0.85 * height()


def test_bad_au_vector_is_rejected() -> None:
    with pytest.raises(ValueError, match="AUS order"):
        face_geometry(np.zeros(3), _identity())


# --- labels and identities -----------------------------------------------------------------


def test_labels_cover_classes_and_identities_repeat(small) -> None:
    labels = np.array([s.label for s in small.samples])
    assert np.bincount(labels, minlength=7).tolist() == [12] * 7
    by_person: dict[str, list[int]] = {}
    for s in small.samples:
        by_person.setdefault(s.identity, []).append(s.label)
    assert len(by_person) == 12
    assert all(sorted(v) == list(range(7)) for v in by_person.values())
    ids = [s.id for s in small.samples]
    assert len(set(ids)) == len(ids) and all(i.startswith("s") and i[1:].isdigit() for i in ids)


def test_fewer_expressions_per_identity() -> None:
    ds = generate(SynthParams(n_identities=4, expressions_per_identity=3, seed=1), image_size=24)
    assert len(ds.samples) == 12
    for p in {s.identity for s in ds.samples}:
        labels = [s.label for s in ds.samples if s.identity == p]
        assert len(labels) == 3 and len(set(labels)) == 3


def test_aus_follow_prototypes() -> None:
    rng = np.random.default_rng(0)
    params = SynthParams()
    for label, name in enumerate(EXPRESSIONS):
        aus = np.stack([sample_aus(label, rng, params) for _ in range(200)])
        assert aus.dtype == np.float32 and aus.min() >= 0 and aus.max() <= 1
        proto = [AUS.index(a) for a in PROTOTYPES[name]]
        others = [i for i in range(len(AUS)) if i not in proto]
        if proto:
            assert aus[:, proto].mean() > 0.3
        assert aus[:, others].max() <= max(params.spurious_max, 0.7 * 1.15)


# --- ratings -------------------------------------------------------------------------------


def test_ratings_shape_and_range(small) -> None:
    r = np.stack([s.ratings for s in small.samples])
    assert r.shape == (len(small.samples), len(ATTRIBUTES)) == (84, 40)
    assert r.dtype == np.float32
    assert r.min() >= 1.0 and r.max() <= 9.0
    assert r.std(axis=0).min() > 0.2


def test_reliability_and_correlation_calibration(medium) -> None:
    rel = np.array([medium.reliability[a] for a in ATTRIBUTES])
    assert set(medium.reliability) == set(ATTRIBUTES)
    assert rel.min() > 0.35 and rel.max() < 0.97
    assert 0.6 < np.median(rel) < 0.92
    assert medium.correlation_mad <= 0.15
    assert medium.images_per_second > 0


def test_more_rater_noise_lowers_reliability() -> None:
    base = SynthParams(n_identities=30, seed=2)
    calm = generate(base, image_size=16)
    noisy = generate(base.model_copy(update={"rater_noise": 3.0}), image_size=16)
    mean = [np.mean(list(d.reliability.values())) for d in (calm, noisy)]
    assert mean[1] < mean[0] - 0.15


def test_ratings_carry_face_signal(medium) -> None:
    aus = np.stack([s.aus for s in medium.samples])
    r = np.stack([s.ratings for s in medium.samples])

    def corr(au: str, attr: str) -> float:
        return float(np.corrcoef(aus[:, AUS.index(au)], r[:, ATTRIBUTES.index(attr)])[0, 1])

    assert corr("AU12", "happy") > 0.4
    assert corr("AU12", "unhappy") < -0.3
    assert corr("AU4", "aggressive") > 0.15


# --- params, preview, progress -------------------------------------------------------------


def test_params_are_closed_and_checked() -> None:
    with pytest.raises(ValueError, match="n_identites"):
        SynthParams(n_identites=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="intensity_range"):
        SynthParams(intensity_range=(0.9, 0.2))
    with pytest.raises(ValueError, match="image_size"):
        generate(SynthParams(n_identities=1), image_size=8)


def test_preview_grid_and_progress(small) -> None:
    fig = preview_grid(small.samples, n_per_class=3)
    axes = fig.get_axes()
    assert len(axes) == 7 * 3
    assert [axes[3 * r].get_ylabel() for r in range(7)] == list(EXPRESSIONS)
    calls: list[tuple[int, int]] = []
    generate(
        SynthParams(n_identities=10), image_size=16, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (70, 70) and all(t == 70 for _, t in calls)
