"""Find and crop the largest face in a photo (OpenCV's bundled Haar cascade; nothing downloaded).

Used by ``facelens predict/explain --detect-face``: the models are trained on tightly cropped
faces (FER2013, SynthFACS), so a holiday photo is cropped to its largest face, with a margin,
before it is encoded and sent through the same pyfunc path as any other image.

The detector is ``cv2.CascadeClassifier`` with ``cv2.data.haarcascades +
"haarcascade_frontalface_default.xml"``, as shipped by ``opencv-python(-headless)`` 4.x.
OpenCV 5 moved the cascade classifier out of the main package (and stopped shipping the XML
files); there :func:`haar_detector` raises :class:`FaceDetectorUnavailable` saying what to
install. Any callable with the :data:`Detector` shape can be passed instead (tests, other
detectors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from facelens.errors import FaceDetectorUnavailable, NoFaceFound

__all__ = [
    "DEFAULT_MARGIN",
    "HAAR_FILE",
    "Detector",
    "FaceBox",
    "FaceDetectorUnavailable",
    "NoFaceFound",
    "crop_face",
    "crop_largest_face",
    "detect_faces",
    "haar_available",
    "haar_detector",
    "largest_face",
]

#: The cascade file looked up in ``cv2.data.haarcascades``.
HAAR_FILE = "haarcascade_frontalface_default.xml"
#: Context kept around the detected box, as a fraction of the box side on every side.
DEFAULT_MARGIN = 0.25

#: ``detector(gray) -> [(x, y, w, h), ...]`` for a ``(H, W)`` uint8 grey image.
Detector = Callable[[np.ndarray], Sequence[Sequence[int]]]


@dataclass(frozen=True)
class FaceBox:
    """A detected face, in pixels of the searched image.

    Attributes:
        x: left column.
        y: top row.
        w: width.
        h: height.
    """

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        """``w * h`` in pixels."""
        return self.w * self.h


@cache
def haar_detector(
    scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24
) -> Detector:
    """OpenCV's bundled frontal-face Haar cascade as a :data:`Detector` (loaded once).

    Args:
        scale_factor: image pyramid step of ``detectMultiScale``.
        min_neighbors: overlapping detections needed to keep a face (higher: fewer, surer).
        min_size: smallest face side searched, in pixels.

    Returns:
        The detector.

    Raises:
        FaceDetectorUnavailable: this OpenCV has no ``CascadeClassifier`` or no cascade file.
    """
    import cv2

    version = getattr(cv2, "__version__", "?")
    fix = (
        "install OpenCV 4 with its bundled cascades, e.g. "
        "pip install 'opencv-python-headless>=4.9,<5', or run without --detect-face "
        "on an already cropped face"
    )
    classifier_cls = getattr(cv2, "CascadeClassifier", None)
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if classifier_cls is None:
        raise FaceDetectorUnavailable(
            f"face detection needs cv2.CascadeClassifier, which OpenCV {version} does not "
            f"provide (OpenCV 5 moved it out of the main package); {fix}"
        )
    path = Path(str(folder or "")) / HAAR_FILE
    if not folder or not path.is_file():
        raise FaceDetectorUnavailable(
            f"the Haar cascade {HAAR_FILE} is not bundled with OpenCV {version} "
            f"(looked in {folder!r}); {fix}"
        )
    classifier = classifier_cls(str(path))
    if classifier.empty():
        raise FaceDetectorUnavailable(f"OpenCV {version} could not load {path}; {fix}")

    def detect(gray: np.ndarray) -> Sequence[Sequence[int]]:
        found = classifier.detectMultiScale(
            gray,
            scaleFactor=scale_factor,
            minNeighbors=min_neighbors,
            minSize=(min_size, min_size),
        )
        return [tuple(int(v) for v in box) for box in found]

    return detect


def haar_available() -> bool:
    """Whether :func:`haar_detector` works with the installed OpenCV."""
    try:
        haar_detector()
    except FaceDetectorUnavailable:
        return False
    return True


def _gray(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(
            f"expected a (H, W, 3) RGB or (H, W) grey uint8 image, got shape {image.shape} "
            f"dtype {image.dtype}; decode it with facelens.data.images.decode_image"
        )
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    weights = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY
    return np.clip(np.rint(image @ weights), 0, 255).astype(np.uint8)


def detect_faces(image: np.ndarray, detector: Detector | None = None) -> list[FaceBox]:
    """Detect faces in an RGB (or grey) image.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey uint8 array; not modified.
        detector: a :data:`Detector`; default :func:`haar_detector`.

    Returns:
        The faces, largest first (boxes clipped to the image; empty boxes dropped).

    Raises:
        ValueError: ``image`` is not a uint8 RGB/grey array.
        FaceDetectorUnavailable: no detector given and OpenCV has no Haar cascade.
    """
    gray = _gray(np.asarray(image))
    find = detector if detector is not None else haar_detector()
    height, width = gray.shape
    boxes: list[FaceBox] = []
    for raw in find(gray):
        x, y, w, h = (int(v) for v in raw)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + w), min(height, y + h)
        if x1 > x0 and y1 > y0:
            boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0))
    return sorted(boxes, key=lambda b: (-b.area, b.y, b.x))


def largest_face(boxes: Sequence[FaceBox]) -> FaceBox:
    """The box with the largest area (ties: the top-most, then left-most).

    Raises:
        NoFaceFound: ``boxes`` is empty.
    """
    if not boxes:
        raise NoFaceFound("no face was found in the image")
    return min(boxes, key=lambda b: (-b.area, b.y, b.x))


def crop_face(image: np.ndarray, box: FaceBox, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Crop a square around a face box, enlarged by ``margin`` of its side on every side.

    The square is centred on the box and shifted (never shrunk below the box) to stay
    inside the image; when the image is too small for the enlarged square, the square is cut
    to the image.

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` uint8 array; not modified.
        box: the face.
        margin: extra context per side as a fraction of the box's larger side, in [0, 2].

    Returns:
        A new array holding the crop.

    Raises:
        ValueError: ``margin`` out of range, or ``box`` outside the image.
    """
    if not 0.0 <= margin <= 2.0:
        raise ValueError(f"margin must be in [0, 2] (a fraction of the face size), got {margin}")
    height, width = image.shape[:2]
    if box.w <= 0 or box.h <= 0 or box.x >= width or box.y >= height or box.x < 0 or box.y < 0:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    side = round(max(box.w, box.h) * (1.0 + 2.0 * margin))
    side = max(1, min(side, width, height))
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    left = round(cx - side / 2.0)
    top = round(cy - side / 2.0)
    left = min(max(0, left), width - side)
    top = min(max(0, top), height - side)
    return np.ascontiguousarray(image[top : top + side, left : left + side]).copy()


def crop_largest_face(
    image: np.ndarray, *, margin: float = DEFAULT_MARGIN, detector: Detector | None = None
) -> tuple[np.ndarray, FaceBox]:
    """Detect faces and crop the largest one (see :func:`crop_face`).

    Args:
        image: ``(H, W, 3)`` RGB uint8 array; not modified.
        margin: context kept around the face (fraction of its side, per side).
        detector: a :data:`Detector`; default :func:`haar_detector`.

    Returns:
        ``(crop, box)``.

    Raises:
        NoFaceFound: nothing detected.
        FaceDetectorUnavailable: no detector given and OpenCV has no Haar cascade.
    """
    box = largest_face(detect_faces(image, detector))
    return crop_face(image, box, margin), box
