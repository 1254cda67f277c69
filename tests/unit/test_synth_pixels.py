"""SynthFACS output is pinned: refactoring the generator must not change a single pixel.

The hashes were recorded before the generator was split into single-concept modules
(``git log`` of this file). A deliberate change to the generator's output updates them, and
says so in its commit: every prepared dataset, and with it every data version, changes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams

#: image size -> sha256 over ids, images, masks, AUs, labels, identities, rounded ratings.
PINNED = {
    64: "7bc6afe7b9fefade",
    48: "258dcdd6270a64d5",
}


def _digest(image_size: int) -> str:
    ds = generate(SynthParams(n_identities=6, expressions_per_identity=7, seed=3), image_size)
    h = hashlib.sha256()
    for s in ds.samples:
        h.update(s.id.encode() + s.identity.encode() + str(s.label).encode())
        h.update(s.image.tobytes() + s.mask.tobytes() + s.aus.tobytes())
        # Ratings go through BLAS; 4 decimals keep the pin independent of summation order.
        h.update(np.round(s.ratings.astype(np.float64), 4).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("image_size", sorted(PINNED))
def test_generated_pixels_are_pinned(image_size: int) -> None:
    assert _digest(image_size) == PINNED[image_size]
