"""The ``facelens`` command line (Typer).

Exit codes: 0 ok, 1 bad input (a one-line message naming the file and the reason), 2 usage.
Heavy libraries (torch, mlflow) are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facelens import __version__

# The commands draw their own progress; MLflow's per-file download bars would interleave.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if TYPE_CHECKING:
    import numpy as np

__all__ = ["app"]

app = typer.Typer(
    name="facelens",
    help="Tracked facial-expression deep learning with explanations (DVC + Optuna + MLflow).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate SynthFACS and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _print_table(table: Table) -> None:
    """Print to the terminal's width; piped or redirected, at the table's natural width (file
    paths and run ids are never cut)."""
    (out if out.is_terminal else Console(width=1000)).print(table)


def _fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code`` (1 = bad input)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar exposed as a ``progress(done, total)`` callback."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"facelens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """facelens: every dataset version, tuning trial, model and explanation, tracked.

    Examples:

        facelens data synth --preview grid.png

        facelens data check path/to/fer2013.csv

        facelens predict face.png --json

        facelens explain face.png --target happy --out cam.png

        facelens runs --limit 10

        facelens compare <run_id> models:/facelens-expression@champion --out report.html
    """


def _load_params_or_default(params_file: Path | None):  # -> Params
    from facelens.config import ConfigError, Params, load_params

    if params_file is None:
        default = Path("params.yaml")
        if not default.is_file():
            return Params()
        params_file = default
    try:
        return load_params(params_file)
    except ConfigError as exc:
        _fail(str(exc).splitlines()[0])


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the canonical prepared dataset (images, masks, manifest) here."
        ),
    ] = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Save a labelled grid of faces (PNG).")
    ] = None,
    n_identities: Annotated[
        int | None, typer.Option(min=1, help="Override data.synth.n_identities.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override data.synth.seed.")] = None,
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml to read data.synth from (default: ./params.yaml if present).",
        ),
    ] = None,
) -> None:
    """Generate SynthFACS and print its calibration (correlation MAD, rater reliability, speed).

    Examples:

        facelens data synth --preview grid.png

        facelens data synth --n-identities 20 --out /tmp/synth
    """
    from facelens.data.synthfacs.generate import generate
    from facelens.data.synthfacs.preview import preview_grid

    params = _load_params_or_default(params_file)
    update: dict[str, int] = {}
    if n_identities is not None:
        update["n_identities"] = n_identities
    if seed is not None:
        update["seed"] = seed
    synth_params = params.data.synth.model_copy(update=update)
    if preview is not None and preview.suffix.lower() != ".png":
        _fail(f"{preview}: --preview must be a .png file")

    if out_dir is not None:
        from facelens.data.prepare import prepare_dataset

        data_params = params.data.model_copy(update={"source": "synth", "synth": synth_params})
        with _progress("SynthFACS -> " + str(out_dir)) as progress:
            report = prepare_dataset(data_params, out_dir, progress=progress)
        synth = report.synth or {}
        dataset = None
        reliability = synth.get("reliability", {})
        mad = synth.get("correlation_mad", float("nan"))
        speed = synth.get("images_per_second", float("nan"))
        n = report.n_images
    else:
        with _progress("SynthFACS") as progress:
            dataset = generate(synth_params, image_size=params.data.image_size, progress=progress)
        reliability, mad = dataset.reliability, dataset.correlation_mad
        speed, n = dataset.images_per_second, len(dataset.samples)

    table = Table(title=f"SynthFACS: {n} images")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("images/s (generation)", f"{speed:.0f}")
    table.add_row("correlation MAD vs real ratings (<= 0.15)", f"{mad:.3f}")
    rel = list(reliability.values())
    if rel:
        table.add_row(
            "rater reliability (min / mean / max)",
            f"{min(rel):.2f} / {sum(rel) / len(rel):.2f} / {max(rel):.2f}",
        )
    _print_table(table)
    if preview is not None:
        if dataset is None:
            dataset = generate(synth_params, image_size=params.data.image_size)
        preview.parent.mkdir(parents=True, exist_ok=True)
        fig = preview_grid(dataset.samples)
        fig.savefig(preview, dpi=100, bbox_inches="tight")
        out.print(f"preview written to {preview}")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="An image folder (FER layout) or a FER2013 CSV.")],
    table: Annotated[
        Path | None,
        typer.Option(
            help="Attribute table (CSV/XLSX) for an images folder: first column file names."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate a dataset without writing anything: counts per class, quarantined files, duplicates.

    Examples:

        facelens data check data/fer2013/fer2013.csv

        facelens data check faces/ --table ratings.xlsx --json
    """
    from facelens.data.prepare import check_source, source_params_for_path

    if not path.exists():
        _fail(f"{path}: no such file or directory")
    if table is not None and not table.is_file():
        _fail(f"{table}: no such attribute table")
    try:
        params = source_params_for_path(path, table)
        with _progress(f"checking {path}") as progress:
            report = check_source(params, progress=progress)
    except (ValueError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    payload = report.to_dict()
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    _print_report(payload)


def _print_report(report: dict) -> None:
    counts = report.get("counts_per_class") or {}
    t = Table(title=f"{report.get('n_images', 0)} usable images")
    t.add_column("class")
    t.add_column("images", justify="right")
    for name, count in counts.items():
        t.add_row(str(name), str(count))
    out.print(t)
    quarantine = report.get("quarantine") or []
    out.print(
        f"quarantined: {report.get('n_quarantined', 0)} {report.get('quarantine_by_reason', {})}"
    )
    for row in quarantine[:20]:
        out.print(f"  {row['file']}: {row['reason']} ({row['detail']})", highlight=False)
    if len(quarantine) > 20:
        out.print(f"  ... and {len(quarantine) - 20} more (use --json)")
    out.print(
        f"exact duplicate groups: {len(report.get('exact_duplicates') or [])}; "
        f"near-duplicate pairs: {len(report.get('near_duplicates') or [])}"
    )
    leakage = report.get("leakage")
    if leakage:
        out.print(f"leakage across source splits: {leakage}")


# --------------------------------------------------------------------------------------------
# Models: predict, explain (one code path with `mlflow models serve`: the pyfunc model)
# --------------------------------------------------------------------------------------------

_TASKS = ("expression", "attributes")
#: Rows sent to the pyfunc per call (its per-request limit, ``pyfunc.DEFAULT_MAX_ROWS``).
_CHUNK = 64
_ROW_PREFIX = re.compile(r"^row \d+: ")
#: Metrics shown by ``facelens runs`` when a run has them.
_KEY_METRICS = (
    "best_value",  # a study's parent run
    "final_objective",  # a trial
    "best_val_metric",
    "val_metric",
    "test_macro_f1",
    "test_accuracy",
    "test_mean_pearson",
)
_ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="MLflow model URI (models:/name@alias, models:/name/3, runs:/<id>/model, a local "
        "model folder) or a run id; default models:/<registry.model_name>@<registry.champion_alias> "
        "of ./params.yaml (models:/facelens-<task>@champion).",
    ),
]
_TaskOption = Annotated[
    str, typer.Option("--task", help="expression | attributes: picks the default model.")
]
_DetectOption = Annotated[
    bool,
    typer.Option(
        "--detect-face",
        help="Crop the largest face (OpenCV Haar cascade) with a margin before predicting.",
    ),
]
_MarginOption = Annotated[
    float,
    typer.Option(
        "--margin", min=0.0, max=2.0, help="Context kept around a detected face (x face size)."
    ),
]


def _tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri`` of ./params.yaml, else the default.

    Sets it on MLflow (the registry follows the tracking URI) and returns it.
    """
    import os

    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = _load_params_or_default(None).tracking.tracking_uri
    mlflow.set_tracking_uri(uri)
    return uri


def _model_uri(model: str | None, task: str) -> str:
    """Turn ``--model`` into an MLflow model URI (a bare run id -> ``runs:/<id>/model``)."""
    if task not in _TASKS:
        raise typer.BadParameter(f"got {task!r}; allowed: {', '.join(_TASKS)}", param_hint="--task")
    if model is None or not model.strip():
        return _load_params_or_default(None).registry.champion_uri(task)
    text = model.strip()
    if ":" in text or "/" in text or Path(text).is_dir():
        return text
    if re.fullmatch(r"[A-Za-z0-9_\-]+", text):
        return f"runs:/{text}/model"
    raise typer.BadParameter(
        f"got {text!r}; give models:/<name>@<alias>, models:/<name>/<version>, "
        "runs:/<run_id>/model, a local model folder or a run id",
        param_hint="--model",
    )


def _load_model(uri: str):  # -> mlflow.pyfunc.PyFuncModel
    """Load a pyfunc model, exit 1 with a one-line reason when that fails."""
    import logging

    import mlflow

    _tracking_uri()
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # keep stderr to our one-liners
    try:
        with err.status(f"loading {uri}"):
            return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"{uri}: could not load the model ({reason[:300]})")


def _read_input(path: Path, detect_face: bool, margin: float) -> tuple[str, np.ndarray | None]:
    """Base64 of what is sent for ``path`` and, when decoded here, the RGB image sent.

    Raises:
        ValueError: a one-line reason naming the file (missing, undecodable, no face).
    """
    from facelens.data.images import ImageRejected, read_image_file

    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    if not detect_face:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: the file could not be read ({type(exc).__name__})") from None
        return base64.b64encode(data).decode("ascii"), None
    from facelens.serving.faces import FaceDetectorUnavailable, NoFaceFound, crop_largest_face

    try:
        image = read_image_file(path)
        crop, _ = crop_largest_face(image, margin=margin)
    except ImageRejected as exc:
        raise ValueError(f"{exc.message} [{exc.code}]") from None
    except NoFaceFound:
        raise ValueError(
            f"{path}: no face was found (OpenCV Haar cascade, frontal faces); "
            "crop the face yourself or run without --detect-face"
        ) from None
    except FaceDetectorUnavailable as exc:
        _fail(str(exc))
    return _png_b64(crop), crop


def _png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _run_model(model, images: list[str], params: dict, progress=None) -> list[dict]:
    """Predict base64 images through the pyfunc in chunks; one dict per image, in order."""
    import pandas as pd

    rows: list[dict] = []
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        frame = model.predict(pd.DataFrame({"image": chunk}), params=params)
        for record in frame.to_dict(orient="records"):
            rows.append(
                {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in record.items()
                }
            )
        if progress is not None:
            progress(min(start + _CHUNK, len(images)), len(images))
    return rows


def _row_message(path: Path, row: dict) -> str:
    return f"{path}: {_ROW_PREFIX.sub('', str(row.get('message') or ''))} [{row.get('error')}]"


def _values(row: dict) -> dict[str, float]:
    skip = {"label", "error", "message", "cam_target", "cam_method", "cam_png"}
    return {k: float(v) for k, v in row.items() if k not in skip and v is not None}


def _summary(row: dict) -> str:
    values = _values(row)
    if row.get("label"):
        return f"{row['label']} (p={values.get('p_' + str(row['label']), float('nan')):.2f})"
    top = sorted(values.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v:.1f}" for k, v in top)


@app.command("predict")
def predict(
    images: Annotated[
        list[Path], typer.Argument(help="Image files (PNG, JPEG, BMP, GIF, WEBP, TIFF).")
    ],
    model: _ModelOption = None,
    task: _TaskOption = "expression",
    detect_face: _DetectOption = False,
    margin: _MarginOption = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
) -> None:
    """Predict expressions (or attribute ratings) for images with a logged MLflow model.

    Uses the same pyfunc model, decoder and preprocessing as `mlflow models serve`.
    Exit code 1 when any image is unusable (one line per image on stderr).

    Examples:

        facelens predict face.jpg

        facelens predict a.png b.png --json --model runs:/<run_id>/model

        facelens predict photo.jpg --detect-face --task attributes
    """
    uri = _model_uri(model, task)
    inputs: dict[int, str] = {}
    problems: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            inputs[i] = _read_input(path, detect_face, margin)[0]
        except ValueError as exc:
            problems[i] = str(exc)
    results: dict[int, dict] = {}
    if inputs:
        pyfunc = _load_model(uri)
        order = sorted(inputs)
        with _progress(f"predicting {len(order)} image(s)") as progress:
            rows = _run_model(pyfunc, [inputs[i] for i in order], {}, progress)
        for i, row in zip(order, rows, strict=True):
            if row.get("error"):
                problems[i] = _row_message(images[i], row)
            else:
                results[i] = row
    if as_json:
        records = []
        for i, path in enumerate(images):
            if i in results:
                records.append({"file": str(path), **results[i]})
            else:
                records.append({"file": str(path), "error": "bad_input", "message": problems[i]})
        typer.echo(json.dumps(records, indent=2))
    elif results:
        table = Table(title=escape(f"predictions ({uri})"))
        table.add_column("image")
        table.add_column("prediction" if task == "expression" else "highest ratings")
        if results and next(iter(results.values())).get("label"):
            table.add_column("top 3", style="dim")
        for i in sorted(results):
            row = results[i]
            cells = [escape(str(images[i])), _summary(row)]
            if row.get("label"):
                probs = sorted(
                    ((k[2:], v) for k, v in _values(row).items() if k.startswith("p_")),
                    key=lambda kv: -kv[1],
                )[:3]
                cells.append(", ".join(f"{k} {v:.2f}" for k, v in probs))
            table.add_row(*cells)
        _print_table(table)
    for i in sorted(problems):
        err.print(f"[bold red]error:[/] {escape(problems[i])}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def _safe_name(method: str) -> str:
    """A file stem from a method name: ``gradcam++`` -> ``gradcampp``; only [a-z0-9_-]."""
    stem = re.sub(r"[^a-z0-9_-]+", "", method.lower().replace("+", "p"))
    return stem or "method"


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing anything that would land outside ``folder``."""
    base = folder.resolve()
    target = (base / name).resolve()
    if target.parent != base:
        _fail(f"{name!r}: refusing to write outside {folder}")
    return target


def _decode_png_b64(text: str) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im.convert("RGB"))


def _methods_figure(image: np.ndarray, overlays: dict[str, np.ndarray], title: str):
    """The input and one overlay per method, in a row (matplotlib Figure, not saved)."""
    from matplotlib.figure import Figure

    n = 1 + len(overlays)
    fig = Figure(figsize=(2.2 * n, 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    panels = [("input", image), *overlays.items()]
    for ax, (name, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


@app.command("explain")
def explain(
    image: Annotated[Path, typer.Argument(help="One image file.")],
    method: Annotated[
        str, typer.Option("--method", help="CAM method (gradcam, gradcam++, hirescam, ...).")
    ] = "gradcam",
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Class or attribute to explain (default: the predicted one); prefix '-' to "
            "explain what lowers the score.",
        ),
    ] = "",
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Overlay PNG to write (default cam.png); with --all-methods a folder "
            "(default cams/) that receives <method>.png and methods.png.",
        ),
    ] = None,
    all_methods: Annotated[
        bool, typer.Option("--all-methods", help="Run every CAM method and write a grid.")
    ] = False,
    model: _ModelOption = None,
    task: _TaskOption = "expression",
    detect_face: _DetectOption = False,
    margin: _MarginOption = 0.25,
) -> None:
    """Predict one image and write its Grad-CAM overlay.

    Examples:

        facelens explain face.png --target happy --out cam.png

        facelens explain face.png --method gradcam++ --model runs:/<run_id>/model

        facelens explain photo.jpg --detect-face --all-methods --out cams/
    """
    from facelens.explain.cams.methods import METHODS, resolve_method

    if all_methods:
        folder = out_path if out_path is not None else Path("cams")
        if folder.suffix.lower() == ".png" or folder.is_file():
            raise typer.BadParameter(
                f"got {folder}; with --all-methods --out is a folder (files are named after "
                "the methods)",
                param_hint="--out",
            )
        methods = list(METHODS)
    else:
        target_file = out_path if out_path is not None else Path("cam.png")
        if target_file.suffix.lower() != ".png" or target_file.is_dir():
            raise typer.BadParameter(
                f"got {target_file}; --out must be a .png file", param_hint="--out"
            )
        try:
            methods = [resolve_method(method)]
        except ValueError:
            raise typer.BadParameter(
                f"got {method!r}; allowed: {', '.join(METHODS)}", param_hint="--method"
            ) from None
    uri = _model_uri(model, task)
    try:
        encoded, _ = _read_input(image, detect_face, margin)
    except ValueError as exc:
        _fail(str(exc))
    pyfunc = _load_model(uri)
    overlays: dict[str, np.ndarray] = {}
    row: dict = {}
    with _progress(f"explaining {image.name}") as progress:
        for k, name in enumerate(methods):
            params = {"explain": True, "target": target, "method": name}
            row = _run_model(pyfunc, [encoded], params)[0]
            progress(k + 1, len(methods))
            if row.get("error") in ("unknown_target", "unknown_method", "invalid_param"):
                message = _ROW_PREFIX.sub("", str(row.get("message")))
                for param in ("target", "method", "explain"):
                    message = message.replace(f"the '{param}' param", f"--{param}")
                _fail(message, code=2)
            if row.get("error") == "explain_failed" and all_methods:
                err.print(
                    f"[yellow]skipped {escape(name)}:[/] {escape(_row_message(image, row))}",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            if row.get("error"):
                _fail(_row_message(image, row))
            overlays[name] = _decode_png_b64(str(row["cam_png"]))
    out.print(f"{image}: {_summary(row)}", highlight=False, markup=False)
    if all_methods:
        folder.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        for name, picture in overlays.items():
            written = _inside(folder, f"{_safe_name(name)}.png")
            Image.fromarray(picture).save(written)
        first = next(iter(overlays.values()))
        data = base64.b64decode(encoded)
        from facelens.data.images import decode_image, resize_square

        shown = resize_square(decode_image(data), first.shape[0])
        fig = _methods_figure(shown, overlays, f"{image.name}: {row.get('cam_target', '')}")
        grid = _inside(folder, "methods.png")
        fig.savefig(grid, dpi=100)
        out.print(
            f"explained {row.get('cam_target')!s} with {len(overlays)} methods -> {folder}/ "
            f"({', '.join(_safe_name(n) + '.png' for n in overlays)}, methods.png)",
            highlight=False,
            markup=False,
        )
        return
    target_file.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(overlays[methods[0]]).save(target_file)
    out.print(
        f"explained {row.get('cam_target')} with {methods[0]} -> {target_file}",
        highlight=False,
        markup=False,
    )


# --------------------------------------------------------------------------------------------
# Runs: list and compare
# --------------------------------------------------------------------------------------------


def _iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("runs")
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to show.")] = 20,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment (name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (all metrics).")] = False,
) -> None:
    """List recent MLflow runs (newest first) with their key metrics.

    Examples:

        facelens runs

        facelens runs --limit 5 --experiment facelens --json
    """
    from mlflow import MlflowClient

    uri = _tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    except Exception as exc:  # unreachable server, corrupt store: one line, exit 1
        _fail(f"{uri}: cannot read the MLflow store ({str(exc).splitlines()[0][:200]})")
    if experiment is not None:
        ids = [i for i, n in experiments.items() if n == experiment]
        if not ids:
            _fail(
                f"experiment {experiment!r} not found in {uri}; "
                f"known: {', '.join(sorted(experiments.values())) or 'none'}"
            )
    else:
        ids = list(experiments)
    found = (
        client.search_runs(ids, max_results=limit, order_by=["attributes.start_time DESC"])
        if ids
        else []
    )
    records = [
        {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name or "",
            "experiment": experiments.get(r.info.experiment_id, r.info.experiment_id),
            "status": r.info.status,
            "start_time": _iso(r.info.start_time),
            "task": r.data.tags.get("facelens.task", ""),
            "stage": r.data.tags.get("facelens.stage", ""),
            "metrics": dict(sorted(r.data.metrics.items())),
        }
        for r in found
    ]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        out.print(f"no runs in {uri}", markup=False)
        return
    shown = [m for m in _KEY_METRICS if any(m in r["metrics"] for r in records)]
    one_experiment = len({r["experiment"] for r in records}) == 1
    title = f"{len(records)} most recent run(s) in {uri}"
    if one_experiment:
        title += f", experiment {records[0]['experiment']}"
    table = Table(title=escape(title))
    table.add_column(
        "run id", no_wrap=True, min_width=32
    )  # full ids: `facelens compare` takes them
    columns = ["name", *([] if one_experiment else ["experiment"]), "status", "started (UTC)"]
    for name in columns:
        table.add_column(name, no_wrap=name != "name")
    for name in shown:
        table.add_column(name.replace("_", " "), justify="right", no_wrap=True)
    for r in records:
        table.add_row(
            r["run_id"],
            escape(r["run_name"]),
            *([] if one_experiment else [escape(r["experiment"])]),
            r["status"],
            r["start_time"][:16],
            *(f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "" for m in shown),
        )
    _print_table(table)


@app.command("compare")
def compare(
    refs: Annotated[
        list[str],
        typer.Argument(help="Run ids, runs:/<id>, models:/<name>@<alias> or models:/<name>/<v>."),
    ],
    out_html: Annotated[
        Path, typer.Option("--out", help="HTML report to write (self-contained).")
    ] = Path("compare.html"),
    log: Annotated[
        bool, typer.Option("--log", help="Also log the report to a 'facelens-compare' run.")
    ] = False,
    embed_interactive: Annotated[
        bool, typer.Option("--embed-interactive", help="Embed the interactive manifold pages.")
    ] = False,
) -> None:
    """Compare runs side by side: params, metrics, Grad-CAM grids, manifolds, faithfulness.

    Examples:

        facelens compare 3f2a... 9c1b... --out report.html

        facelens compare models:/facelens-expression@champion models:/facelens-expression@challenger --log
    """
    from facelens.tracking.compare import compare_runs

    if out_html.suffix.lower() not in (".html", ".htm") or out_html.is_dir():
        raise typer.BadParameter(f"got {out_html}; --out must be an .html file", param_hint="--out")
    uri = _tracking_uri()
    try:
        with err.status(f"comparing {len(refs)} run(s)"):
            written = compare_runs(
                list(refs),
                out_html,
                tracking_uri=uri,
                log_to_run=log,
                embed_interactive=embed_interactive,
            )
    except (ValueError, LookupError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    suffix = " (and logged to MLflow)" if log else ""
    out.print(f"report written to {written}{suffix}", markup=False)
