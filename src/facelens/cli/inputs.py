"""Image files in, base64 out (and back): what predict and explain send to the pyfunc."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from facelens.cli.console import fail
from facelens.errors import DataError, MissingInputError, NoFaceFound

if TYPE_CHECKING:
    import numpy as np

__all__ = ["decode_png_b64", "png_b64", "read_input"]


def read_input(path: Path, detect_face: bool, margin: float) -> tuple[str, np.ndarray | None]:
    """Base64 of what is sent for ``path`` and, when decoded here, the RGB image sent.

    Raises:
        MissingInputError: ``path`` does not exist (the message names it).
        DataError: a one-line reason naming the file (not a file, unreadable, undecodable, no
            face: :class:`~facelens.errors.NoFaceFound`).
    """
    from facelens.data.images import ALLOWED_FORMATS, ImageRejected, decode_image

    allowed = f"give an image file ({', '.join(ALLOWED_FORMATS)})"
    if not path.exists():
        raise MissingInputError(f"{path}: no such file; {allowed}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file; {allowed}")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; {allowed}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"{path}: the file could not be read ({reason}); {allowed}") from None
    if not data:
        raise DataError(f"{path}: the image is empty (0 bytes); {allowed}")
    if not detect_face:
        return base64.b64encode(data).decode("ascii"), None
    from facelens.serving.faces import FaceDetectorUnavailable, crop_largest_face

    try:
        image = decode_image(data, name=str(path))
        crop, _ = crop_largest_face(image, margin=margin)
    except ImageRejected as exc:
        raise DataError(f"{exc.message} [{exc.code}]") from None
    except NoFaceFound:
        raise NoFaceFound(
            f"{path}: no face was found (OpenCV Haar cascade, frontal faces); "
            "crop the face yourself or run without --detect-face"
        ) from None
    except FaceDetectorUnavailable as exc:
        fail(str(exc))
    return png_b64(crop), crop


def png_b64(image: np.ndarray) -> str:
    """Base64 of ``image`` (RGB uint8) encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png_b64(text: str) -> np.ndarray:
    """The RGB image of a base64 PNG (the pyfunc's ``cam_png``)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im.convert("RGB"))
