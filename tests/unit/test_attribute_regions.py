"""Attribute localization: the regions that drive each SynthFACS attribute, and a check that a
map ignoring them fails."""

from __future__ import annotations

import numpy as np
import pytest

from facelens.constants import ATTRIBUTES, REGION_BITS
from facelens.explain.faithfulness.attribute_regions import (
    attribute_localization,
    attribute_regions,
    region_weights,
)

S = 32


def _masks(n: int) -> np.ndarray:
    """A face (rows 4-28) with brows (row 8), eyes (rows 10-12), nose and mouth (rows 20-23)."""
    m = np.zeros((n, S, S), np.uint8)
    m[:, 4:29, 6:26] |= REGION_BITS["face"]
    m[:, 8:9, 8:24] |= REGION_BITS["brows"]
    m[:, 10:13, 8:24] |= REGION_BITS["eyes"]
    m[:, 13:19, 14:18] |= REGION_BITS["nose"]
    m[:, 20:24, 10:22] |= REGION_BITS["mouth"]
    return m


def _blob(n: int, rows: slice, cols: slice) -> np.ndarray:
    cams = np.full((n, S, S), 0.01, np.float32)
    cams[:, rows, cols] = 1.0
    return cams


def test_every_attribute_has_driving_regions_read_off_the_rating_model() -> None:
    for a in ATTRIBUTES:
        w = region_weights(a)
        assert w.keys() == {"brows", "eyes", "nose", "mouth", "outside"}
        assert sum(w.values()) == pytest.approx(1.0)
        assert attribute_regions(a), a
    # happy / friendly load on warmth (valence, smile): the mouth drives them.
    assert "mouth" in attribute_regions("happy") and "nose" not in attribute_regions("happy")
    # competence loads on glasses: intelligent gets the eyes.
    assert "eyes" in attribute_regions("intelligent")
    with pytest.raises(ValueError, match="unknown attribute 'tall'"):
        region_weights("tall")


def test_map_on_the_driving_region_passes() -> None:
    rep = attribute_localization(_blob(4, slice(20, 24), slice(10, 22)), _masks(4), "happy")
    assert rep["regions"] == ["mouth"] and rep["n_images"] == 4
    assert rep["mean_lift_in_face"] > 2.0 and rep["passed"] is True


@pytest.mark.parametrize(
    ("where", "rows", "cols"),
    [
        ("forehead, on the face but off every feature", slice(4, 7), slice(8, 24)),
        ("the nose, a feature that does not drive 'happy'", slice(13, 19), slice(14, 18)),
        ("the background", slice(29, 32), slice(0, 32)),
    ],
)
def test_map_that_ignores_the_driving_region_fails(where: str, rows: slice, cols: slice) -> None:
    rep = attribute_localization(_blob(4, rows, cols), _masks(4), "happy")
    assert rep["mean_lift_in_face"] <= 1.0, where
    assert rep["passed"] is False, where


def test_uniform_map_is_chance_and_does_not_pass() -> None:
    rep = attribute_localization(np.ones((2, S, S), np.float32), _masks(2), "happy")
    assert rep["mean_lift_in_face"] == pytest.approx(1.0)
    assert rep["passed"] is False
