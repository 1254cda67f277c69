"""Peak resident memory of the served model answering one large image (issue 14).

    python benchmarks/serving_memory.py                  # a 6000x6000 RGBA PNG (~150 KB)
    python benchmarks/serving_memory.py --side 4000 --mode RGB --format JPEG

Builds a random 32-px VGG16 expression model (weights do not change memory), writes the image
file, then in a fresh subprocess loads :class:`facelens.serving.pyfunc.FaceLensModel`, answers
one small request (warm-up; its resident set is "idle"), and answers one request holding the
large image. It prints the idle resident set, the peak (``VmHWM`` of ``/proc/self/status``:
``ru_maxrss`` would also count the parent's peak, which Linux keeps across ``exec``), the
peak above idle, the wall time of the large request and the row's ``error`` code.

Run it with another ``PYTHONPATH`` to measure another checkout (before / after a change).
Nothing is asserted; ``tests/integration/test_serving.py`` bounds the peak.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import base64, json, sys, time
import mlflow, numpy as np, pandas as pd
from PIL import Image
import io
from facelens.serving.pyfunc import FaceLensModel

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)

model_dir, image_path = sys.argv[1], sys.argv[2]
served = FaceLensModel()
served.load_context(mlflow.pyfunc.PythonModelContext({"model_dir": model_dir}, {}))
buf = io.BytesIO()
Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buf, format="PNG")
small = base64.b64encode(buf.getvalue()).decode()
served.predict(None, pd.DataFrame({"image": [small]}))
text = base64.b64encode(open(image_path, "rb").read()).decode()
idle = status("VmRSS")
start = time.perf_counter()
out = served.predict(None, pd.DataFrame({"image": [text]}))
wall = time.perf_counter() - start
print(json.dumps({
    "idle_mb": idle,
    "peak_mb": status("VmHWM"),
    "wall_s": wall,
    "error": str(out.loc[0, "error"]),
    "label": str(out.loc[0, "label"]),
}))
"""


def export_tiny(root: Path) -> Path:
    """A random 32-px VGG16 expression model exported under ``root``."""
    from facelens.constants import EXPRESSIONS
    from facelens.models.build import build_model
    from facelens.models.export import export_model
    from facelens.models.meta import ModelMeta
    from facelens.models.params import ModelParams

    model, source = build_model(
        ModelParams(arch="vgg16", weights="none", input_size=32),
        num_outputs=len(EXPRESSIONS),
        dropout=0.0,
        seed=0,
    )
    meta = ModelMeta.for_model(
        model, task="expression", output_names=EXPRESSIONS, input_size=32, weights_source=source
    )
    export_model(model, meta, root / "exported")
    return root / "exported"


def big_image(side: int, mode: str, fmt: str) -> bytes:
    """A ``side x side`` image that compresses well: 24x24 blocks, alpha varying by block."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    blocks[..., 3] = np.where(blocks[..., 3] > 60, 255, blocks[..., 3])
    img = Image.fromarray(blocks, "RGBA").resize((side, side), Image.Resampling.NEAREST)
    if mode != "RGBA":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"optimize": True} if fmt == "PNG" else {"quality": 90}))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--mode", default="RGBA")
    parser.add_argument("--format", default="PNG")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = export_tiny(root)
        data = big_image(args.side, args.mode, args.format)
        image = root / f"big.{args.format.lower()}"
        image.write_bytes(data)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(model_dir), str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["peak_above_idle_mb"] = result["peak_mb"] - result["idle_mb"]
    print(
        f"{args.side}x{args.side} {args.mode} {args.format}, {len(data) / 1024:.0f} KB: "
        f"idle {result['idle_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB "
        f"(+{result['peak_above_idle_mb']:.0f} MB above idle), {result['wall_s']:.2f} s, "
        f"error={result['error']!r} label={result['label']!r}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
