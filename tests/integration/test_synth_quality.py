"""SynthFACS difficulty guard: learnable from action units, not from raw pixels (slow: it
generates and fits the default-size dataset)."""

from __future__ import annotations

import numpy as np
import pytest

from facelens.constants import EXPRESSIONS, REGION_BITS
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams

FACE, BROWS, EYES, NOSE, MOUTH = (
    REGION_BITS[r] for r in ("face", "brows", "eyes", "nose", "mouth")
)
PARTS = BROWS | EYES | NOSE | MOUTH


def _identity_split(groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    ids = np.unique(groups)
    np.random.default_rng(seed).shuffle(ids)
    n = len(ids)
    train = np.isin(groups, ids[: int(0.7 * n)])
    val = np.isin(groups, ids[int(0.7 * n) : int(0.85 * n)])
    return train, val, ~(train | val)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_difficulty_guard_pixels_fail_aus_succeed() -> None:
    """Default set: linear on pixels macro-F1 <= 0.5, while the AUs still give the label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds = generate(SynthParams(), image_size=64)
    x = np.stack([s.image for s in ds.samples]).reshape(len(ds.samples), -1).astype(np.float32)
    aus = np.stack([s.aus for s in ds.samples])
    y = np.array([s.label for s in ds.samples])
    train, _, test = _identity_split(np.array([s.identity for s in ds.samples]))

    pixels = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=200))
    pixels.fit(x[train], y[train])
    f1 = f1_score(y[test], pixels.predict(x[test]), average="macro")
    assert f1 <= 0.5, f"raw-pixel logistic regression too good: macro-F1 {f1:.3f}"
    assert f1 > 1.5 / len(EXPRESSIONS)  # but the images are not noise

    on_aus = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=2000))
    on_aus.fit(aus[train], y[train])
    acc = accuracy_score(y[test], on_aus.predict(aus[test]))
    assert acc >= 0.95, f"labels not recoverable from AUs: accuracy {acc:.3f}"


@pytest.mark.slow
def test_difficulty_guard_on_default_configuration() -> None:
    """Raw-pixel logistic regression stays weak (macro-F1 <= 0.5) while the label is
    recoverable from the AU vector (>= 0.95) — on the default set and a grouped split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    ds = generate(SynthParams(), image_size=64)
    ids = np.array([s.identity for s in ds.samples])
    y = np.array([s.label for s in ds.samples])
    people = np.unique(ids)
    rng = np.random.default_rng(0)
    test_people = set(rng.choice(people, size=int(0.15 * len(people)), replace=False))
    test = np.array([i in test_people for i in ids])

    pixels = np.stack([s.image.reshape(-1) for s in ds.samples]).astype(np.float32) / 255.0
    scaler = StandardScaler().fit(pixels[~test])
    clf = LogisticRegression(C=0.01, max_iter=300).fit(scaler.transform(pixels[~test]), y[~test])
    pixel_f1 = f1_score(y[test], clf.predict(scaler.transform(pixels[test])), average="macro")
    assert pixel_f1 <= 0.5, pixel_f1

    aus = np.stack([s.aus for s in ds.samples])
    au_clf = LogisticRegression(C=10.0, max_iter=2000).fit(aus[~test], y[~test])
    assert accuracy_score(y[test], au_clf.predict(aus[test])) >= 0.95
