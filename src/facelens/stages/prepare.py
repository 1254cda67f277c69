"""The ``prepare`` stage: decode the raw source through the safe decoder (or generate
SynthFACS) into the canonical dataset: images, masks, manifest, quarantine list, report."""

from __future__ import annotations

from pathlib import Path

from facelens.config import Params
from facelens.data.prepare import prepare_dataset
from facelens.data.prepare_report import PrepareReport
from facelens.stages.common import progress_printer

__all__ = ["run"]


def run(params: Params, out_dir: Path) -> PrepareReport:
    """Prepare ``params.data`` into ``out_dir`` (replaced atomically), with progress lines."""
    return prepare_dataset(params.data, out_dir, progress=progress_printer("prepare"))
