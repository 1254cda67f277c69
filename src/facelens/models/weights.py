"""Weights policy: ImageNet from the torch hub cache or a download, a local state dict, or
random initialisation, with a visible ``random-fallback`` when ``auto`` cannot get ImageNet."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.models import VGG16_BN_Weights, VGG16_Weights

from facelens.errors import WeightsUnavailable
from facelens.models.vgg import FaceVGG

__all__ = ["load_weights_into", "resolve_weights", "weights_file"]

_TORCHVISION_WEIGHTS = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
}
_POLICIES = ("auto", "imagenet", "none")
_OFFLINE_ENV = "FACELENS_OFFLINE"


def weights_file(arch: str) -> Path:
    """Where torchvision's ImageNet weights for ``arch`` live in the local torch hub cache."""
    if arch not in _TORCHVISION_WEIGHTS:
        raise ValueError(f"arch must be one of {sorted(_TORCHVISION_WEIGHTS)}; got {arch!r}")
    url = _TORCHVISION_WEIGHTS[arch].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _unwrap_state(obj: Any, source: str) -> dict[str, Tensor]:
    """Accept a bare state dict or one nested under ``state_dict`` / ``model``."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
    raise WeightsUnavailable(
        f"{source} does not hold a state dict (a mapping of parameter names to tensors); "
        f"got {type(obj).__name__}. Save one with torch.save(model.state_dict(), path)."
    )


def _backbone_mismatch(arch: str, state: Mapping[str, Tensor]) -> tuple[list[str], list[str]]:
    """(missing, unexpected) backbone keys of ``state`` (either key format) for ``arch``."""
    probe = _skeleton(arch)
    renamed = probe.from_torchvision_keys(state)
    expected = {k: v.shape for k, v in probe.state_dict().items() if k.startswith("blocks.")}
    have = {k: v.shape for k, v in renamed.items() if k.startswith(("blocks.", "features."))}
    missing = sorted(k for k in expected if k not in have)
    unexpected = sorted(k for k in have if k not in expected)
    wrong = sorted(k for k in expected if k in have and tuple(have[k]) != tuple(expected[k]))
    return missing + [f"{k} (shape)" for k in wrong], unexpected


def _skeleton(arch: str) -> FaceVGG:
    with torch.device("meta"):
        return FaceVGG(arch, num_outputs=1, head="pooled")  # type: ignore[arg-type]


#: Downloads that already failed in this process (url -> reason): a tuning study builds one
#: model per trial, and retrying an unreachable host (and warning) each time helps nobody.
_FAILED_DOWNLOADS: dict[str, str] = {}


def _fail_or_fallback(policy: str, message: str) -> tuple[None, str]:
    if policy == "imagenet":
        raise WeightsUnavailable(message)
    warnings.warn(
        f"{message}\nweights: auto -> falling back to random initialisation ('random-fallback').",
        UserWarning,
        stacklevel=3,
    )
    return None, "random-fallback"


def resolve_weights(arch: str, policy: str) -> tuple[dict[str, Tensor] | None, str]:
    """Resolve a weights policy to a state dict and a ``weights_source`` label.

    Args:
        arch: ``vgg16`` or ``vgg16_bn``.
        policy: ``auto`` (ImageNet if obtainable, else a visible warning and random init),
            ``imagenet`` (ImageNet or :class:`WeightsUnavailable`), ``none`` (random init) or
            a path to a ``.pt``/``.pth`` state dict (torchvision VGG keys or a facelens export).
            ImageNet weights are looked up in the torch hub cache first; the download is
            skipped when the environment sets ``FACELENS_OFFLINE=1``.

    Returns:
        ``(state_dict or None, weights_source)`` where ``weights_source`` is ``imagenet``,
        ``none``, ``random-fallback`` or ``file:<abs path>#sha256:<first 12 hex>``.

    Raises:
        WeightsUnavailable: ImageNet weights unobtainable under ``imagenet``; a weights file
            that is missing, unreadable or does not match ``arch``.
        ValueError: unknown ``arch``.
    """
    target = weights_file(arch)  # validates arch
    if policy == "none":
        return None, "none"
    if policy in ("auto", "imagenet"):
        url = _TORCHVISION_WEIGHTS[arch].url
        tried: list[str] = []
        if target.is_file():
            try:
                state = torch.load(target, map_location="cpu", weights_only=True)
                return _unwrap_state(state, str(target)), "imagenet"
            except Exception as err:  # corrupt or partial file
                tried.append(f"found {target} but could not load it ({err})")
        else:
            tried.append(f"not in the torch hub cache ({target} does not exist)")
        if os.environ.get(_OFFLINE_ENV, "") == "1":
            tried.append(f"download skipped because {_OFFLINE_ENV}=1")
        elif url in _FAILED_DOWNLOADS:
            tried.append(_FAILED_DOWNLOADS[url] + " (earlier in this process; not retried)")
        else:
            try:
                state = torch.hub.load_state_dict_from_url(
                    url, map_location="cpu", progress=False, weights_only=True
                )
                return _unwrap_state(state, url), "imagenet"
            except Exception as err:
                _FAILED_DOWNLOADS[url] = f"download from {url} failed ({type(err).__name__}: {err})"
                tried.append(_FAILED_DOWNLOADS[url])
        message = (
            f"ImageNet weights for {arch} are unavailable: " + "; ".join(tried) + ". "
            f"To use them offline, place {target.name} (from {url}) at {target}. "
            "Or set `weights: none` in the model params to train from random initialisation."
        )
        return _fail_or_fallback(policy, message)
    return _load_weights_path(arch, policy)


def _load_weights_path(arch: str, policy: str) -> tuple[dict[str, Tensor], str]:
    path = Path(policy).expanduser().resolve()
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights must be one of {', '.join(_POLICIES)} or a path to an existing .pt/.pth "
            f"state dict; got {policy!r} and {path} is not a file."
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailable(
            f"could not load weights file {path} with torch.load(weights_only=True): {err}. "
            "Save plain tensors with torch.save(model.state_dict(), path)."
        ) from err
    state = _unwrap_state(obj, str(path))
    missing, unexpected = _backbone_mismatch(arch, state)
    if missing or unexpected:
        raise WeightsUnavailable(
            f"weights file {path} does not match arch {arch!r}: "
            f"{len(missing)} missing key(s) (e.g. {missing[:4]}), "
            f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:4]}). "
            "Check `arch` (vgg16 vs vgg16_bn) or pass a torchvision VGG / facelens state dict."
        )
    return state, f"file:{path}#sha256:{digest}"


def load_weights_into(model: FaceVGG, state: Mapping[str, Tensor]) -> None:
    """Load backbone weights strictly and head weights where their shapes match."""
    renamed = model.from_torchvision_keys(state)
    own = model.state_dict()
    backbone = {k: v for k, v in renamed.items() if k.startswith("blocks.")}
    head = {
        k: v
        for k, v in renamed.items()
        if k.startswith("classifier.") and k in own and tuple(own[k].shape) == tuple(v.shape)
    }
    missing = sorted(k for k in own if k.startswith("blocks.") and k not in backbone)
    unexpected = sorted(k for k in backbone if k not in own)
    if missing or unexpected:
        raise WeightsUnavailable(
            f"state dict does not match {model.arch}: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    model.load_state_dict({**backbone, **head}, strict=False)
