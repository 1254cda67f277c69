"""Small I/O helpers every layer shares: atomic files and folders, JSON, hashing, flattening.

A reader (``dvc``, MLflow, a concurrent stage) never sees half a file: every write goes to a
temporary sibling that replaces the target only when it is complete, and a failed write
leaves the previous file or folder as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_output_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_hash",
    "flatten_metrics",
    "jsonable",
    "write_error_line",
    "write_json",
]


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is untouched. The parent
    folder is created when missing.

    Example::

        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise _named(exc, path) from exc
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc


#: What a failed write reports, by errno: the one line :func:`write_error_line` makes.
WRITE_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
#: Below this many free bytes, a write that failed without an errno (``torch.save``'s C++
#: writer raises ``RuntimeError("... unexpected pos ...")``) is taken for a full disk.
_NEARLY_FULL = 1 << 20


def _named(exc: BaseException, path: Path) -> BaseException:
    """``exc`` as an ``OSError`` naming ``path`` (the output, not its hidden temporary) when
    it is a full disk, an exceeded quota or a read-only file system; else ``exc`` itself."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in WRITE_ERRNOS and isinstance(exc, RuntimeError) and _nearly_full(path.parent):
        code = errno.ENOSPC
    if code not in WRITE_ERRNOS:
        return exc
    return OSError(code, os.strerror(code), str(path))


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def write_error_line(exc: BaseException) -> str | None:
    """One line for a write that failed because the disk is full, the quota exceeded or the
    file system read-only (``disk full while writing <path>; ...``); ``None`` for any other
    error."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    what = WRITE_ERRNOS[exc.errno]
    where = exc.filename if exc.filename else "an output (no file named)"
    fix = (
        "make it writable"
        if exc.errno == errno.EROFS
        else "free some space (`dvc gc`, old checkpoints in cache/)"
    )
    return (
        f"{what} while writing {where}; {fix} and run again: earlier outputs, "
        "checkpoints and finished trials are kept"
    )


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: mappings with string keys, lists for tuples and arrays, Python
    numbers for numpy scalars, and ``None`` for NaN and infinities (strict JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy array / scalar
        return jsonable(value.tolist())
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path | str, doc: Any, *, indent: int | None = 2) -> None:
    """Write ``doc`` (made :func:`jsonable`) as strict JSON, atomically, ending in a newline."""
    text = json.dumps(jsonable(doc), indent=indent, allow_nan=False)
    atomic_write_text(path, text + "\n")


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, no spaces); a pydantic model
    is dumped in JSON mode first. Equal contents give equal hashes whatever the key order."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_KEY_BAD = re.compile(r"[^0-9A-Za-z_\-. /]")


def flatten_metrics(
    doc: Any,
    prefix: str = "",
    *,
    sep: str = "/",
    bools: bool = False,
    lists: bool = True,
    skip: Callable[[str], bool] | None = None,
) -> dict[str, float]:
    """Flatten nested metrics to ``{"a/b": value}``, keeping only finite real numbers.

    Mappings nest with ``sep``; lists and tuples index with ``sep`` + position; strings,
    None, NaN and infinities are dropped. ``+`` becomes ``p`` (``gradcam++`` ->
    ``gradcampp``) and other characters MLflow rejects in metric keys become ``_``.

    Args:
        doc: possibly nested metrics.
        prefix: the key of ``doc`` itself (``prefix<sep>key``), or empty.
        sep: the separator between levels.
        bools: keep booleans as 1.0 / 0.0 (dropped otherwise).
        lists: descend into lists and tuples (dropped otherwise).
        skip: a predicate on a (partial) key; matching subtrees are left out.

    Returns:
        A new flat dict of floats.
    """
    out: dict[str, float] = {}

    def visit(key: str, value: Any) -> None:
        if skip is not None and key and skip(key):
            return
        if hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy/torch scalar
            value = value.item()
        if value is None or (isinstance(value, bool) and not bools):
            return
        if isinstance(value, Real):
            if math.isfinite(float(value)):
                out[_KEY_BAD.sub("_", key.replace("+", "p"))] = float(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(f"{key}{sep}{k}" if key else str(k), v)
        elif isinstance(value, list | tuple) and lists:
            for i, v in enumerate(value):
                visit(f"{key}{sep}{i}" if key else str(i), v)

    visit(prefix, doc)
    return out


@contextmanager
def atomic_output_dir(out_dir: Path | str) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it into place only on success.

    On an exception the temporary folder is removed and an existing ``out_dir`` is left
    untouched, so a failure never leaves a half-written folder nor destroys the previous one.

    Args:
        out_dir: the final folder (replaced as a whole when the block succeeds).

    Yields:
        The temporary folder to write into.

    Raises:
        FileExistsError: ``out_dir`` exists and is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory; remove it or pick another")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise _named(exc, out_dir) from exc
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; outputs are not secret
    try:
        yield tmp
        _swap_into_place(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _named(exc, _inside(exc, tmp, out_dir))
        if named is exc:
            raise
        raise named from exc


def _inside(exc: BaseException, tmp: Path, out_dir: Path) -> Path:
    """The file of ``out_dir`` that ``exc`` failed on (its name in the temporary folder
    mapped back), or ``out_dir`` itself."""
    name = getattr(exc, "filename", None)
    if isinstance(name, str | os.PathLike):
        try:
            return out_dir / Path(name).relative_to(tmp)
        except ValueError:
            pass
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()  # only the unique name is wanted
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
