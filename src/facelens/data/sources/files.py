"""Reading the files of a source folder safely: a size limit, hidden files skipped, symlink
loops not followed, a deterministic (sorted) order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from facelens.data.images import IMAGE_EXTENSIONS, ImageRejected

__all__ = [
    "HIDDEN_FILES",
    "MAX_FILE_BYTES",
    "is_hidden",
    "is_image_name",
    "read_limited",
    "sorted_children",
    "walk_files",
]

#: Files above this size are refused (``too_large``) before being read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

#: File names (lower case) that operating systems drop into folders; never records.
HIDDEN_FILES = frozenset({"thumbs.db", "desktop.ini"})


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in HIDDEN_FILES


def is_image_name(path: Path) -> bool:
    return path.is_file() and not is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS


def sorted_children(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not is_hidden(p)), key=lambda p: p.name)


def walk_files(folder: Path, _seen: frozenset[Path] = frozenset()) -> Iterator[Path]:
    real = folder.resolve()
    if real in _seen:  # a symlink loop: do not walk forever
        return
    seen = _seen | {real}
    for entry in sorted_children(folder):
        if entry.is_dir():
            yield from walk_files(entry, seen)
        elif entry.is_file():
            yield entry


def read_limited(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes, refusing files larger than ``max_bytes`` without reading them.

    Raises:
        ImageRejected: ``too_large`` when the file is bigger than ``max_bytes``.
        OSError: When the file cannot be read.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected(
            "too_large",
            f"{path}: the file is {size:,} bytes, above the {max_bytes:,}-byte limit for one image",
        )
    return path.read_bytes()
