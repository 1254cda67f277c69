"""Expression-labelled image folders: ``root/<split>/<class>/*`` and/or ``root/<class>/*``
(see :mod:`facelens.data.sources` for the folder names)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from facelens.constants import EXPRESSIONS
from facelens.data.sources.files import is_image_name, read_limited, sorted_children, walk_files
from facelens.data.sources.records import RawRecord, no_bytes
from facelens.errors import MissingInputError

__all__ = ["SPLIT_FOLDERS", "iter_imagefolder"]

#: Split folder names (lower case) -> usage.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "publictest": "val",
    "test": "test",
    "privatetest": "test",
}


def iter_imagefolder(root: Path) -> Iterator[RawRecord]:
    """Yield the images of an expression-labelled folder tree.

    Layouts: ``root/<split>/<class>/...`` and/or ``root/<class>/...`` (see the module
    docstring for the folder names). Every non-hidden file inside a class folder (recursively)
    is a record, so stray non-images are quarantined as ``unsupported_format`` rather than
    silently dropped; files inside a folder that is neither a split nor a class get the problem
    ``("bad_label", ...)``; image files lying directly in ``root`` or in a split folder get
    ``("bad_label", "not inside a class folder")``; other loose files are ignored. A file
    reached through a symbolic link that leads out of ``root`` gets ``("outside_root", ...)``
    and is never read.

    Args:
        root: The dataset folder.

    Yields:
        Records in sorted path order (deterministic).

    Raises:
        MissingInputError: When ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"image folder {root} does not exist or is not a directory")
    for entry in sorted_children(root):
        name = entry.name.lower()
        if entry.is_dir():
            if name in SPLIT_FOLDERS:
                yield from _iter_split_folder(root, entry, SPLIT_FOLDERS[name])
            else:
                yield from _iter_class_folder(root, entry, usage=None, allow_split_hint=True)
        elif is_image_name(entry):
            yield _misplaced(root, entry)


def _iter_split_folder(root: Path, split_dir: Path, usage: str) -> Iterator[RawRecord]:
    for entry in sorted_children(split_dir):
        if entry.is_dir():
            yield from _iter_class_folder(root, entry, usage=usage, allow_split_hint=False)
        elif is_image_name(entry):
            yield _misplaced(root, entry)


def _iter_class_folder(
    root: Path, class_dir: Path, usage: str | None, allow_split_hint: bool
) -> Iterator[RawRecord]:
    label = _class_index(class_dir.name)
    problem: tuple[str, str] | None = None
    if label is None:
        expected = ", ".join(EXPRESSIONS)
        splits = " or a split folder (train, val, test, ...)" if allow_split_hint else ""
        problem = ("bad_label", f"folder {class_dir.name!r} is not one of {expected}{splits}")
    for path in walk_files(class_dir):
        rel = path.relative_to(root).as_posix()
        escape = _escape(root, path)
        yield RawRecord(
            key=rel,
            load=no_bytes if escape else partial(read_limited, path),
            label=label,
            identity=None,
            usage=usage,
            origin=str(path),
            problem=escape or problem,
        )


def _misplaced(root: Path, path: Path) -> RawRecord:
    escape = _escape(root, path)
    return RawRecord(
        key=path.relative_to(root).as_posix(),
        load=no_bytes if escape else partial(read_limited, path),
        origin=str(path),
        problem=escape
        or ("bad_label", "not inside a class folder; put it in <class>/ or <split>/<class>/"),
    )


def _escape(root: Path, path: Path) -> tuple[str, str] | None:
    """``("outside_root", ...)`` for a file that is (or lies under) a symbolic link leading
    out of the dataset folder: it is never read, so a dataset cannot pull in other files."""
    real = path.resolve()
    if real.is_relative_to(root.resolve()):
        return None
    return (
        "outside_root",
        f"a symbolic link to {real}, outside the dataset folder {root}; "
        "copy the file into the folder instead",
    )


def _class_index(name: str) -> int | None:
    lowered = name.strip().lower()
    return EXPRESSIONS.index(lowered) if lowered in EXPRESSIONS else None
