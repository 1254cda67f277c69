"""Keep the code dependencies of every stage in ``dvc.yaml`` equal to its import closure.

A stage depends on its script in ``pipelines/`` and on every facelens file the script can
run (:func:`facelens._closure.stage_code_deps`): editing one of them re-runs exactly the
stages that run it. ``tests/unit/test_dvc_deps.py`` fails when ``dvc.yaml`` disagrees; this
script rewrites the ``deps`` lists (comments and other entries are kept)::

    python tools/dvc_deps.py           # rewrite dvc.yaml
    python tools/dvc_deps.py --check   # exit 1 and print the differences
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ruamel.yaml import YAML

from facelens._closure import stage_code_deps

ROOT = Path(__file__).resolve().parents[1]


def _is_code(dep: str) -> bool:
    return dep.startswith(("pipelines/", "src/"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report differences")
    ap.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = ap.parse_args(argv)
    yaml = YAML()
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(args.dvc_yaml.read_text())
    stale = False
    for name, stage in doc["stages"].items():
        deps = stage.get("deps", [])
        want = stage_code_deps(str(stage["cmd"]), args.dvc_yaml.parent)
        have = [d for d in deps if _is_code(str(d))]
        if have != want:
            stale = True
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            print(
                f"{name}: missing {missing}, extra {extra}"
                if missing or extra
                else f"{name}: order differs"
            )
            data = [d for d in deps if not _is_code(str(d))]
            deps.clear()
            deps.extend([*want, *data])
    if stale and not args.check:
        with args.dvc_yaml.open("w") as fh:
            yaml.dump(doc, fh)
        print(f"rewrote {args.dvc_yaml}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
