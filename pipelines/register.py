"""DVC stage `register`: register the train run's model, alias `challenger`, maybe `champion`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stage import run_stage
from facelens.workflows import register_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--run-file", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="registry decision JSON")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    run = json.loads(args.run_file.read_text())
    decision = register_model(params, run, json.loads(args.metrics.read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(decision, indent=2) + "\n")
    print(f"register: {decision['name']} v{decision['version']}: {decision['reason']}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
