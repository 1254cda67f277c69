"""DVC stage `pretrain`: a face-pretrained VGG backbone per architecture, trained on the
identities of a SynthFACS pool disjoint from the task's people (no task labels seen)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stages import pretrain
from facelens.stages.common import run_stage


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, required=True, help="folder for <arch>.pt + meta.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    meta = pretrain.run(params, args.out)
    what = "identity macro-F1" if meta["objective"] == "identity" else "geometry mean r"
    score = ", ".join(f"{a} {v:.3f}" for a, v in meta["val_score"].items())
    return (
        f"{meta['objective']} objective, {meta['n_identities']} pool identities, "
        f"{meta['n_images']} images; held-out {what} {score} -> {args.out}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, "pretrain"))
