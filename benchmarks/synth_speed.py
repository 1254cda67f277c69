"""Time SynthFACS generation and print images/s.

Usage::

    python benchmarks/synth_speed.py                      # default set: 350 x 7 faces at 64 px
    python benchmarks/synth_speed.py --n-identities 50 --image-size 96 --repeat 3

The first run includes the one-off reference sample that standardises the rating cues
(cached per process); later runs show the steady rendering speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, generate ``--repeat`` times, print the speed of each run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-identities", type=int, default=SynthParams().n_identities)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    params = SynthParams(n_identities=args.n_identities, seed=args.seed)
    rates = []
    for run in range(args.repeat):
        start = time.perf_counter()
        dataset = generate(params, image_size=args.image_size)
        elapsed = time.perf_counter() - start
        rates.append(len(dataset.samples) / elapsed)
        print(
            f"run {run}: {len(dataset.samples)} images at {args.image_size} px "
            f"in {elapsed:.2f} s = {rates[-1]:.0f} images/s"
        )
    print(
        f"SynthFACS speed: median {statistics.median(rates):.0f} images/s, "
        f"best {max(rates):.0f} images/s ({platform.processor() or platform.machine()}, 1 process)"
    )


if __name__ == "__main__":
    main()
