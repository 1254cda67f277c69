"""DVC stage `prepare`: decode the raw source (or generate SynthFACS) into the canonical dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.data.prepare_report import sparse_classes
from facelens.stages import prepare
from facelens.stages.common import run_stage


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, required=True, help="prepared dataset directory")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    report = prepare.run(params, args.out)
    sparse = sparse_classes(report)
    if sparse:
        print(f"prepare: warning: {sparse}", file=sys.stderr)
    synth = ""
    if report.synth:
        synth = (
            f"; SynthFACS correlation MAD {report.synth['correlation_mad']:.3f}, "
            f"{report.synth['images_per_second']:.0f} images/s"
        )
    return (
        f"{report.n_images} images, {report.n_quarantined} quarantined "
        f"{dict(report.quarantine_by_reason)}, {len(report.exact_duplicates)} exact-duplicate "
        f"groups, {len(report.near_duplicates)} near-duplicate pairs -> {args.out}{synth}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, "prepare"))
