"""The ``prepare`` stage's core: any source -> the canonical prepared dataset.

:func:`prepare_dataset` reads a source (SynthFACS, an image folder, a FER2013 CSV, images plus
an attribute table), decodes every image with :func:`facelens.data.images.decode_image`,
center-crops and resizes it to ``image_size``, hashes it, and writes::

    out_dir/images/<id>.png     RGB, image_size x image_size
    out_dir/masks/<id>.png      region bit flags (SynthFACS only)
    out_dir/manifest.csv        one row per accepted image (facelens.data.manifest)
    out_dir/quarantine.csv      file, reason, detail for every refused input
    out_dir/report.json         PrepareReport.to_dict()

Bad inputs never crash it: each is quarantined with a reason (``empty``,
``unsupported_format``, ``too_large``, ``truncated``, ``unreadable``, ``too_small``,
``multi_frame``, ``bad_label``, ``bad_pixels``, ``bad_usage``). It raises only when the source
itself is unusable (missing path, unreadable CSV header, no usable image at all). Output is
built in a temporary sibling directory and swapped in at the end, so a failure leaves the
previous dataset intact. :func:`check_source` runs the same validation and writes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from facelens._io import atomic_output_dir
from facelens.data.manifest import write_manifest
from facelens.data.params import DataParams
from facelens.data.prepare_report import PrepareReport, nothing_usable, summarise
from facelens.data.prepare_rows import (
    PreparedRow,
    Progress,
    manifest_frame,
    record_rows,
    synth_rows,
)
from facelens.data.sources.attributes_table import iter_attributes_table
from facelens.data.sources.fer2013_csv import iter_fer2013_csv
from facelens.data.sources.imagefolder import iter_imagefolder
from facelens.data.sources.records import RawRecord
from facelens.errors import MissingInputError, SourceError

__all__ = [
    "QUARANTINE_COLUMNS",
    "check_source",
    "prepare_dataset",
    "source_params_for_path",
]

#: Columns of ``quarantine.csv``.
QUARANTINE_COLUMNS: tuple[str, ...] = ("file", "reason", "detail")


def prepare_dataset(
    params: DataParams, out_dir: Path, progress: Progress | None = None
) -> PrepareReport:
    """Build the canonical prepared dataset from ``params`` into ``out_dir`` (atomically).

    Args:
        params: The ``data`` section (source, path, image size, limits, SynthFACS spec).
        out_dir: Destination directory; replaced as a whole on success, untouched on failure.
        progress: Optional ``progress(done, total)`` callback.

    Returns:
        The report that was also written as ``out_dir/report.json``.

    Raises:
        MissingInputError: When the source path does not exist.
        SourceError: When the source is unusable (bad CSV header, no attribute column...).
        SourceError: When no image at all could be used (the message summarises why).
    """
    out_dir = Path(out_dir)
    records = _load_records(params)  # fails early, before anything is created
    with atomic_output_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        if params.source == "synth":
            (tmp / "masks").mkdir()
        report, rows = _run(params, records, tmp, progress)
        if report.n_images == 0:
            raise SourceError(nothing_usable(params, report))
        manifest = manifest_frame(rows)
        write_manifest(manifest, tmp / "manifest.csv")
        pd.DataFrame(report.quarantine, columns=list(QUARANTINE_COLUMNS)).to_csv(
            tmp / "quarantine.csv", index=False
        )
        report_doc = report.to_dict(timings=False)
        (tmp / "report.json").write_text(json.dumps(report_doc, indent=2) + "\n")
    return report


def check_source(params: DataParams, progress: Progress | None = None) -> PrepareReport:
    """Validate a source exactly like :func:`prepare_dataset` but write nothing.

    Unlike ``prepare_dataset`` it returns (rather than raises) when no image is usable, so the
    report can show why.

    Raises:
        MissingInputError: When the source path does not exist.
        SourceError: When the source is unusable (bad CSV header, no attribute column...).
    """
    records = _load_records(params)
    report, _ = _run(params, records, None, progress)
    return report


def source_params_for_path(path: Path, table: Path | None = None) -> DataParams:
    """Guess the source kind of a path for ``facelens data check``.

    A ``.csv`` file is a FER2013 CSV, a folder is an image folder, and a folder with ``table``
    is an attributes table.

    Raises:
        MissingInputError: When ``path`` does not exist.
        SourceError: When ``path`` is a file of another kind (naming what is accepted).
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such file or directory")
    if table is not None:
        if not path.is_dir():
            raise SourceError(
                f"{path}: with --table the path must be the images folder, got a file"
            )
        return DataParams(source="attributes_table", path=str(path), table=str(table))
    if path.is_dir():
        return DataParams(source="imagefolder", path=str(path))
    if path.suffix.lower() == ".csv":
        return DataParams(source="fer2013_csv", path=str(path))
    hint = (
        " (an attribute table needs the images folder as PATH and --table)"
        if path.suffix.lower() in {".xlsx", ".xlsm"}
        else ""
    )
    raise SourceError(
        f"{path}: expected a FER2013 .csv file or an image folder, got a {path.suffix or 'file'}"
        f"{hint}"
    )


# --------------------------------------------------------------------------- internals


def _load_records(params: DataParams) -> list[RawRecord] | None:
    """Materialise a real source's records (None for synth); raises if the source is unusable."""
    if params.source == "synth":
        return None
    assert params.path is not None  # guaranteed by DataParams
    path = Path(params.path)
    if params.source == "imagefolder":
        return list(iter_imagefolder(path))
    if params.source == "fer2013_csv":
        return list(iter_fer2013_csv(path))
    assert params.table is not None
    return list(iter_attributes_table(path, Path(params.table)))


def _run(
    params: DataParams, records: list[RawRecord] | None, out: Path | None, progress: Progress | None
) -> tuple[PrepareReport, list[PreparedRow]]:
    start = time.perf_counter()
    report = PrepareReport(
        source=params.source,
        path=params.path,
        image_size=params.image_size,
        near_duplicate_distance=params.near_duplicate_distance,
    )
    if records is None:
        rows, n_inputs = synth_rows(params, out, progress, report)
    else:
        rows = record_rows(params, records, out, progress, report)
        n_inputs = len(records)
    summarise(report, rows, params.near_duplicate_distance)
    elapsed = time.perf_counter() - start
    report.duration_s = round(elapsed, 3)
    report.images_per_second = round(n_inputs / elapsed, 1) if n_inputs else 0.0
    return report, rows
