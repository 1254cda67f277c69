"""``facelens explain``: predict one image and write its Grad-CAM overlay (or one per method)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from facelens.cli.console import err, fail, out, progress_bar
from facelens.cli.inputs import decode_png_b64, read_input
from facelens.cli.model import (
    DetectOption,
    DeviceOption,
    MarginOption,
    ModelOption,
    TaskOption,
    load_model,
    model_uri,
    run_model,
)
from facelens.cli.paths import check_output, write_output
from facelens.cli.rows import ROW_PREFIX, ood_warning, row_message, row_summary
from facelens.errors import FaceLensError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["explain"]

#: Row errors that name a bad ``--target`` / ``--method`` (a usage error, exit 2).
_USAGE_ERRORS = ("unknown_target", "unknown_method", "invalid_param")


def explain(
    image: Annotated[Path, typer.Argument(help="One image file.", readable=False)],
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
    model: ModelOption = None,
    task: TaskOption = "expression",
    detect_face: DetectOption = False,
    margin: MarginOption = 0.25,
    device: DeviceOption = None,
) -> None:
    """Predict one image and write its Grad-CAM overlay.

    Examples:

        facelens explain face.png --target happy --out cam.png

        facelens explain face.png --method gradcam++ --model runs:/<run_id>/model

        facelens explain photo.jpg --detect-face --all-methods --out cams/
    """
    destination, methods = _destination_and_methods(method, out_path, all_methods)
    if all_methods:
        names = [f"{_safe_name(name)}.png" for name in methods] + ["methods.png"]
        check_output([destination / name for name in names], [image])
    else:
        check_output([destination], [image])
    uri = model_uri(model, task)
    try:
        encoded, _ = read_input(image, detect_face, margin)
    except FaceLensError as exc:
        fail(str(exc))
    pyfunc = load_model(uri, device)
    overlays, row = _explain_methods(pyfunc, encoded, image, methods, target, all_methods)
    out.print(f"{image}: {row_summary(row)}", highlight=False, markup=False)
    warning = ood_warning(image, row)
    if warning is not None:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if all_methods:
        _write_method_files(destination, overlays, encoded, image, row)
        return
    from PIL import Image

    picture = Image.fromarray(overlays[methods[0]])
    write_output(destination, lambda tmp: picture.save(tmp, format="PNG"))
    out.print(
        f"explained {row.get('cam_target')} with {methods[0]} -> {destination}",
        highlight=False,
        markup=False,
    )


def _destination_and_methods(
    method: str, out_path: Path | None, all_methods: bool
) -> tuple[Path, list[str]]:
    """The folder (``--all-methods``) or PNG file to write and the methods to run; a bad
    ``--out`` or ``--method`` is a usage error."""
    from facelens.explain.cams.methods import METHODS, resolve_method

    if all_methods:
        folder = out_path if out_path is not None else Path("cams")
        if folder.suffix.lower() == ".png" or folder.is_file():
            raise typer.BadParameter(
                f"got {folder}; with --all-methods --out is a folder (files are named after "
                "the methods)",
                param_hint="--out",
            )
        return folder, list(METHODS)
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
    return target_file, methods


def _explain_methods(
    pyfunc, encoded: str, image: Path, methods: list[str], target: str, all_methods: bool
) -> tuple[dict[str, np.ndarray], dict]:
    """One overlay per method (skipping failed ones with ``--all-methods``) and the last row."""
    from facelens.serving.refusals import RequestRefused

    overlays: dict[str, np.ndarray] = {}
    row: dict = {}
    with progress_bar(f"explaining {image.name}") as progress:
        for k, name in enumerate(methods):
            params = {"explain": True, "target": target, "method": name}
            try:
                row = run_model(pyfunc, [encoded], params)[0]
            except RequestRefused as exc:  # a bad --target / --method refuses the request
                fail(_usage_message(str(exc)), code=2)
            progress(k + 1, len(methods))
            if row.get("error") in _USAGE_ERRORS:
                fail(_usage_message(str(row.get("message"))), code=2)
            if row.get("error") == "explain_failed" and all_methods:
                err.print(
                    f"[yellow]skipped {escape(name)}:[/] {escape(row_message(image, row))}",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            if row.get("error"):
                fail(row_message(image, row))
            overlays[name] = decode_png_b64(str(row["cam_png"]))
    return overlays, row


def _usage_message(message: str) -> str:
    """The served model's reason for refusing a param, worded for the command line."""
    message = ROW_PREFIX.sub("", message)
    for param in ("target", "method", "explain"):
        message = message.replace(f"the '{param}' param", f"--{param}")
    return message


def _write_method_files(
    folder: Path, overlays: dict[str, np.ndarray], encoded: str, image: Path, row: dict
) -> None:
    """``<method>.png`` per overlay and ``methods.png`` (input and overlays in a row)."""
    from PIL import Image

    for name, picture in overlays.items():
        written = _inside(folder, f"{_safe_name(name)}.png")
        overlay = Image.fromarray(picture)
        write_output(written, lambda tmp, overlay=overlay: overlay.save(tmp, format="PNG"))
    first = next(iter(overlays.values()))
    data = base64.b64decode(encoded)
    from facelens.data.images import decode_image, resize_square

    shown = resize_square(decode_image(data), first.shape[0])
    fig = _methods_figure(shown, overlays, f"{image.name}: {row.get('cam_target', '')}")
    grid = _inside(folder, "methods.png")
    write_output(grid, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    out.print(
        f"explained {row.get('cam_target')!s} with {len(overlays)} methods -> {folder}/ "
        f"({', '.join(_safe_name(n) + '.png' for n in overlays)}, methods.png)",
        highlight=False,
        markup=False,
    )


def _safe_name(method: str) -> str:
    """A file stem from a method name: ``gradcam++`` -> ``gradcampp``; only [a-z0-9_-]."""
    stem = re.sub(r"[^a-z0-9_-]+", "", method.lower().replace("+", "p"))
    return stem or "method"


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing anything that would land outside ``folder``."""
    base = folder.resolve()
    target = (base / name).resolve()
    if target.parent != base:
        fail(f"{name!r}: refusing to write outside {folder}")
    return target


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
