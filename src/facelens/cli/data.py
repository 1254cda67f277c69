"""``facelens data``: generate SynthFACS (``synth``) and validate a dataset (``check``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facelens.cli.console import fail, out, print_table, progress_bar
from facelens.cli.defaults import load_params_or_default
from facelens.cli.paths import check_output, check_output_dir, write_output

__all__ = ["data_app"]

data_app = typer.Typer(help="Generate SynthFACS and validate datasets.", no_args_is_help=True)

#: Quarantined files listed one per line before ``... and N more``.
_QUARANTINE_SHOWN = 20


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

    params = load_params_or_default(params_file)
    update: dict[str, int] = {}
    if n_identities is not None:
        update["n_identities"] = n_identities
    if seed is not None:
        update["seed"] = seed
    synth_params = params.data.synth.model_copy(update=update)
    if preview is not None and preview.suffix.lower() != ".png":
        fail(f"{preview}: --preview must be a .png file")
    if preview is not None:
        check_output([preview], [], "--preview")
    if out_dir is not None:
        check_output_dir(out_dir, "--out")

    if out_dir is not None:
        from facelens.data.prepare import prepare_dataset

        data_params = params.data.model_copy(update={"source": "synth", "synth": synth_params})
        try:
            with progress_bar("SynthFACS -> " + str(out_dir)) as progress:
                report = prepare_dataset(data_params, out_dir, progress=progress)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            fail(f"{out_dir}: could not be written ({reason}); give --out a folder you can write")
        synth = report.synth or {}
        dataset = None
        reliability = synth.get("reliability", {})
        mad = synth.get("correlation_mad", float("nan"))
        speed = synth.get("images_per_second", float("nan"))
        n = report.n_images
    else:
        with progress_bar("SynthFACS") as progress:
            dataset = generate(synth_params, image_size=params.data.image_size, progress=progress)
        reliability, mad = dataset.reliability, dataset.correlation_mad
        speed, n = dataset.images_per_second, len(dataset.samples)

    print_table(_calibration_table(n, speed, mad, reliability))
    if preview is not None:
        if dataset is None:
            dataset = generate(synth_params, image_size=params.data.image_size)
        fig = preview_grid(dataset.samples)
        write_output(
            preview,
            lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"),
            "--preview",
        )
        out.print(f"preview written to {preview}")


def _calibration_table(n: int, speed: float, mad: float, reliability: dict) -> Table:
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
    return table


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
        fail(f"{path}: no such file or directory")
    if table is not None and not table.is_file():
        fail(f"{table}: no such attribute table")
    try:
        params = source_params_for_path(path, table)
        with progress_bar(f"checking {path}") as progress:
            report = check_source(params, progress=progress)
    except (ValueError, OSError) as exc:  # the data readers also raise plain ValueError
        fail(str(exc).splitlines()[0])
    from facelens.data.prepare_report import sparse_classes

    payload = report.to_dict()
    sparse = sparse_classes(report)
    payload["warnings"] = [sparse] if sparse else []
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
    for row in quarantine[:_QUARANTINE_SHOWN]:
        out.print(f"  {row['file']}: {row['reason']} ({row['detail']})", highlight=False)
    if len(quarantine) > _QUARANTINE_SHOWN:
        out.print(f"  ... and {len(quarantine) - _QUARANTINE_SHOWN} more (use --json)")
    out.print(
        f"exact duplicate groups: {len(report.get('exact_duplicates') or [])}; "
        f"near-duplicate pairs: {len(report.get('near_duplicates') or [])}"
    )
    leakage = report.get("leakage")
    if leakage:
        out.print(f"leakage across source splits: {leakage}")
    for warning in report.get("warnings") or []:
        out.print(f"warning: {warning}", highlight=False)
