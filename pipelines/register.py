"""DVC stage `register`: register the train run's model, alias `challenger`, maybe `champion`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelens._io import write_json
from facelens.config import load_params
from facelens.stages import register
from facelens.stages.common import read_json_file, read_run_file, run_stage


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--run-file", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="registry decision JSON")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    metrics = read_json_file(args.metrics, made_by="evaluate")
    decision = register.run(params, read_run_file(args.run_file), metrics)
    write_json(args.out, decision)
    return register.summary(decision)


if __name__ == "__main__":
    sys.exit(run_stage(main, "register"))
