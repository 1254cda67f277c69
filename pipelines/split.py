"""DVC stage `split`: seeded grouped, stratified train/val/test split with a leakage check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stages import split
from facelens.stages.common import run_stage


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, required=True, help="prepared dataset directory")
    ap.add_argument("--out", type=Path, required=True, help="splits directory")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    result = split.run(params, args.prepared, args.out)
    sizes = {
        name: len(df)
        for name, df in (("train", result.train), ("val", result.val), ("test", result.test))
    }
    return f"{sizes} -> {args.out}; leakage check clean"


if __name__ == "__main__":
    sys.exit(run_stage(main, "split"))
