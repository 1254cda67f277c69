"""Where the commands write: ``--out`` paths checked before any work and written atomically.

The rules (README, "CLI and workspace"):

* an ``--out`` that is, or would overwrite, an input file is refused (exit 1, one line);
* a missing parent folder of ``--out`` is created; a parent that cannot be created (a file is
  in the way, no permission) or a folder that cannot be written is refused with one line,
  before the model is loaded when the permissions already say so;
* each file is written to a temporary sibling that replaces the target only when complete, so
  a failed write (no permission, disk full) leaves no partial file and nothing outside
  ``--out``'s folder, and the previous file, if any, as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from facelens._io import atomic_path
from facelens.cli.console import fail

__all__ = ["check_output", "check_output_dir", "write_output"]


def check_output(targets: Iterable[Path], inputs: Iterable[Path], option: str = "--out") -> None:
    """Exit 1 with one line when a file of ``targets`` is an input or cannot be written.

    Args:
        targets: The files the command will write.
        inputs: The files it reads (never overwritten, whatever the path spelling: the same
            resolved path, a symlink to it, or a hard link).
        option: The option that named ``targets``, for the message.
    """
    inputs = list(inputs)
    for target in targets:
        for source in inputs:
            if _same_file(target, source):
                fail(
                    f"{target}: {option} would overwrite the input {source}; "
                    f"give {option} a path other than the input's"
                )
        if target.is_dir():
            fail(f"{target}: {option} names a folder; give a file path")
        _check_parent(target, option)


def check_output_dir(folder: Path, option: str = "--out") -> None:
    """Exit 1 with one line when ``folder`` is a file or cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        fail(f"{folder}: {option} names a file; give a folder path")
    _check_parent(folder, option)


def _check_parent(target: Path, option: str) -> None:
    folder = _nearest_existing(target.parent)
    if not folder.is_dir():
        fail(
            f"{target}: cannot create its folder, {folder} is a file; "
            f"give {option} a path inside a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(
            f"{target}: the folder {folder} is not writable; "
            f"give {option} a path in a folder you can write"
        )


def write_output(target: Path, write: Callable[[Path], None], option: str = "--out") -> None:
    """``write(tmp)`` to a temporary sibling of ``target``, then move it into place.

    The parent folder is created when missing. Any ``OSError`` (permission, disk full, a file
    where a folder should be) exits 1 with one line naming ``target``; the temporary file is
    removed and ``target`` is left as it was.
    """
    try:
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        fail(
            f"{target}: could not be written ({reason}); "
            f"give {option} a path in a folder you can write"
        )


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: not the same file
        return False


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (``.`` for a relative path)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
