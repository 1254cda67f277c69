"""Cold-start latency of ``facelens predict`` / ``facelens explain`` against a bare
``python -c "import torch, torchvision"``, and where one cold call spends its time.

    python benchmarks/cli_latency.py                 # 5 cold starts of each, then the split
    python benchmarks/cli_latency.py --repeats 9 --keep /tmp/clibench   # reuse the store

Builds once, in a temporary folder, a VGG16 expression model at the pipeline's input size
(random weights: latency does not depend on them), logged and registered the way the train and
register stages do it (``log_pyfunc_model`` into a run of a private sqlite MLflow store,
``register``, the ``champion`` alias), and a SynthFACS face PNG. Then it runs, interleaved, N
cold subprocesses of each command, and prints the median and spread of each, their ratio to the
bare import measured in the same run, and the split of one cold call: module imports
(``python -X importtime``, by top-level package) and phase timestamps inside one process
(imports, model resolution, model load, inference, writing).

Nothing is asserted: the figures vary with the machine and its load; benchmarks/README.md
records them with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

NAME = "facelens-bench"
ALIAS = "champion"
BARE = "import torch, torchvision"
#: What the ``facelens`` console script runs, from the interpreter running this script.
CLI = "import sys; from facelens.cli.app import app; sys.argv[0] = 'facelens'; app()"
IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def build_store(root: Path, input_size: int) -> tuple[str, Path]:
    """A registered model in a sqlite store under ``root`` and a face PNG; (tracking URI, PNG).

    The model is what the pipeline's defaults train (``vgg16_bn``, pooled head, ``input_size``)
    with random weights, exported, logged with ``log_pyfunc_model`` inside a tracked run (as the
    train stage does), registered with ``register`` and given the ``champion`` alias.
    """
    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from facelens.constants import EXPRESSIONS
    from facelens.data.synthfacs.generate import generate
    from facelens.data.synthfacs.params import SynthParams
    from facelens.models.build import build_model
    from facelens.models.export import export_model
    from facelens.models.meta import ModelMeta
    from facelens.models.params import ModelParams
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register
    from facelens.tracking.runs import configure, tracked_run

    uri = f"sqlite:///{root / 'mlflow.db'}"
    image = root / "face.png"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    if image.is_file():  # --keep: built by an earlier run
        return uri, image
    params = ModelParams(arch="vgg16_bn", weights="none", input_size=input_size)
    model, source = build_model(params, num_outputs=len(EXPRESSIONS), seed=0)
    meta = ModelMeta.for_model(
        model,
        task="expression",
        output_names=EXPRESSIONS,
        input_size=input_size,
        weights_source=source,
    )
    export_model(model, meta, root / "exported")
    configure(None, "cli-latency", artifact_location=str(root / "artifacts"))
    with tracked_run("train bench"):
        info = log_pyfunc_model(root / "exported")
        mlflow.log_metrics({"best_val_metric": 0.5})
    version = register(info.model_uri, NAME)
    MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, ALIAS, version.version)
    sample = generate(SynthParams(n_identities=1, seed=3), image_size=input_size).samples[3]
    Image.fromarray(sample.image).save(image)
    return uri, image


def commands(image: Path, out_dir: Path) -> dict[str, list[str]]:
    """The timed command lines (argv after the interpreter)."""
    model = f"models:/{NAME}@{ALIAS}"
    return {
        "bare import": ["-c", BARE],
        "predict": ["-c", CLI, "predict", str(image), "--model", model],
        "explain": [
            "-c",
            CLI,
            "explain",
            str(image),
            "--model",
            model,
            "--out",
            str(out_dir / "cam.png"),
        ],
    }


def _run(argv: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return seconds, done


def cold_starts(cmds: dict[str, list[str]], repeats: int, cwd: Path) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` cold subprocesses per command, interleaved (so drifting load
    on a shared machine touches every command alike)."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, argv in cmds.items():
            times[name].append(_run(argv, cwd)[0])
    return times


def print_cold_starts(times: dict[str, list[float]]) -> None:
    bare = statistics.median(times["bare import"])
    targets = {"predict": 1.6, "explain": 2.5}
    print(f"{'command':<12} {'median':>8} {'min':>7} {'max':>7}  ratio to bare (median)")
    for name, values in times.items():
        med = statistics.median(values)
        ratio = f"{med / bare:.2f}x" if name != "bare import" else "1.00x"
        if name in targets:
            ratio += f"  (target <= {targets[name]}x)"
        print(f"{name:<12} {med:7.2f}s {min(values):6.2f}s {max(values):6.2f}s  {ratio}")


def import_split(argv: list[str], cwd: Path) -> dict[str, float]:
    """Seconds of module imports by top-level package (``-X importtime`` self times)."""
    _, done = _run(["-X", "importtime", *argv], cwd)
    by_package: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        match = IMPORTTIME.match(line)
        if match:
            by_package[match[4].split(".")[0]] += int(match[1]) / 1e6
    return dict(by_package)


def print_import_split(splits: dict[str, dict[str, float]], top: int) -> None:
    names = list(splits)
    totals = defaultdict(float)
    for split in splits.values():
        for package, seconds in split.items():
            totals[package] = max(totals[package], seconds)
    shown = sorted(totals, key=lambda p: -totals[p])[:top]
    print(f"{'package':<16}" + "".join(f"{n:>13}" for n in names))
    for package in shown:
        print(f"{package:<16}" + "".join(f"{splits[n].get(package, 0.0):12.2f}s" for n in names))
    rest = [sum(v for k, v in splits[n].items() if k not in shown) for n in names]
    print(f"{'(the rest)':<16}" + "".join(f"{v:12.2f}s" for v in rest))
    print(f"{'all imports':<16}" + "".join(f"{sum(splits[n].values()):12.2f}s" for n in names))


def phases(command: str, image: Path, out_dir: Path) -> None:
    """Run one ``predict`` / ``explain`` step by step in this (fresh) process, as the command
    does it, and print JSON ``[[phase, seconds], ...]``; runs in a child (``--phases``)."""
    marks: list[tuple[str, float]] = []
    last = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        marks.append((name, now - last))
        last = now

    import base64
    import contextlib
    import io

    from facelens.cli import explain as explain_cli
    from facelens.cli import predict as predict_cli
    from facelens.cli.defaults import tracking_uri
    from facelens.cli.model import load_model, run_model

    mark("CLI imports (typer, rich, facelens.cli)")
    uri = f"models:/{NAME}@{ALIAS}"
    if command == "explain":
        _, methods = explain_cli._destination_and_methods("gradcam", out_dir / "cam.png", False)
        mark("CAM methods (pytorch_grad_cam: torchvision, sklearn, matplotlib, scipy)")
    import mlflow.artifacts

    tracking_uri()
    mark("MLflow import")
    mlflow.artifacts.download_artifacts(artifact_uri=uri)  # what loading a models:/ URI does first
    mark("resolve models:/name@alias (registry store, alias, download URI)")
    import torch  # noqa: F401

    mark("torch import")
    pyfunc = load_model(uri)  # the command's own loader (resolves the alias again)
    mark("model load (MLflow pyfunc, facelens.serving, weights)")
    encoded = base64.b64encode(image.read_bytes()).decode("ascii")
    sink = io.StringIO()
    if command == "predict":
        row = run_model(pyfunc, [encoded], {})[0]
        mark("inference")
        with contextlib.redirect_stdout(sink):
            predict_cli._print_predictions([image], {0: row}, uri, "expression")
        mark("writing (table)")
    else:
        overlays, _ = explain_cli._explain_methods(pyfunc, encoded, image, methods, "", False)
        mark("inference + Grad-CAM")
        from PIL import Image

        Image.fromarray(overlays[methods[0]]).save(out_dir / "cam.png")
        mark("writing (overlay PNG)")
    print(json.dumps(marks), flush=True)
    from facelens.cli import app as cli_app

    if hasattr(cli_app, "exit_now"):  # leave as the command does (older versions tear down)
        cli_app.exit_now(0)


def print_phases(command: str, image: Path, out_dir: Path, cwd: Path) -> None:
    argv = [str(Path(__file__).resolve()), "--phases", command, str(image), str(out_dir)]
    wall, done = _run(argv, cwd)
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    inside = sum(seconds for _, seconds in marks)
    print(f"{command}: one cold call, {wall:.2f} s wall")
    print(f"  {'interpreter start-up and exit':<74} {wall - inside:6.2f}s")
    for name, seconds in marks:
        print(f"  {name:<74} {seconds:6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="cold starts per command")
    parser.add_argument("--input-size", type=int, default=64, help="model input size (px)")
    parser.add_argument("--top", type=int, default=12, help="packages shown in the import split")
    parser.add_argument(
        "--keep", type=Path, default=None, help="build (or reuse) the store in this folder"
    )
    parser.add_argument("--phases", nargs=3, help=argparse.SUPPRESS)  # child: command img out
    args = parser.parse_args()
    if args.phases:
        phases(args.phases[0], Path(args.phases[1]), Path(args.phases[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        uri, image = build_store(root.resolve(), args.input_size)
        work = Path(tmp) / "work"
        work.mkdir()
        cmds = commands(image, work)
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f} before; store {uri}"
        )
        times = cold_starts(cmds, args.repeats, work)
        print(
            f"\ncold starts: {args.repeats} of each, interleaved; load average "
            f"{os.getloadavg()[0]:.2f} after"
        )
        print_cold_starts(times)
        print("\nimports of one cold call, by top-level package (python -X importtime)")
        print_import_split({n: import_split(a, work) for n, a in cmds.items()}, args.top)
        print("\nphases of one cold call (timestamps in one process)")
        for command in ("predict", "explain"):
            print_phases(command, image, work, work)


if __name__ == "__main__":
    main()
