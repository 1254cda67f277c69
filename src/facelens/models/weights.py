"""Weights policy: ImageNet from the torch hub cache or a download, the SynthFACS-pretrained
backbone of the ``pretrain`` stage, a local state dict, or random initialisation; ``auto``
tries them in that order and warns at each fallback (``weights_source`` records the result)."""

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

__all__ = ["load_weights_into", "pretrained_file", "resolve_weights", "weights_file"]

_TORCHVISION_WEIGHTS = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
}
_POLICIES = ("auto", "imagenet", "pretrained", "none")
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


def _imagenet(arch: str) -> tuple[dict[str, Tensor] | None, str]:
    """ImageNet weights from the torch hub cache or a download: ``(state, "")`` or
    ``(None, why not and how to get them)``."""
    target = weights_file(arch)
    url = _TORCHVISION_WEIGHTS[arch].url
    tried: list[str] = []
    if target.is_file():
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
            return _unwrap_state(state, str(target)), ""
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
            return _unwrap_state(state, url), ""
        except Exception as err:
            _FAILED_DOWNLOADS[url] = f"download from {url} failed ({type(err).__name__}: {err})"
            tried.append(_FAILED_DOWNLOADS[url])
    return None, (
        f"ImageNet weights for {arch} are unavailable: " + "; ".join(tried) + ". "
        f"To use them offline, place {target.name} (from {url}) at {target}."
    )


def pretrained_file(arch: str, pretrained_dir: str | Path | None) -> Path | None:
    """The ``pretrain`` stage's backbone for ``arch`` in ``pretrained_dir`` (None: no folder)."""
    return None if pretrained_dir is None else Path(pretrained_dir) / f"{arch}.pt"


def resolve_weights(
    arch: str, policy: str, pretrained_dir: str | Path | None = None
) -> tuple[dict[str, Tensor] | None, str]:
    """Resolve a weights policy to a state dict and a ``weights_source`` label.

    Args:
        arch: ``vgg16`` or ``vgg16_bn``.
        policy: ``auto`` (ImageNet if obtainable, else the SynthFACS-pretrained backbone in
            ``pretrained_dir``, else random initialisation; each fallback warns),
            ``imagenet`` (ImageNet or :class:`WeightsUnavailable`), ``pretrained`` (the
            backbone in ``pretrained_dir`` or :class:`WeightsUnavailable`), ``none`` (random
            init) or a path to a ``.pt``/``.pth`` state dict (torchvision VGG keys or a
            facelens export). ImageNet weights are looked up in the torch hub cache first;
            the download is skipped when the environment sets ``FACELENS_OFFLINE=1``.
        pretrained_dir: the ``pretrain`` stage's output folder (``model.pretrained``).

    Returns:
        ``(state_dict or None, weights_source)`` where ``weights_source`` is ``imagenet``,
        ``pretrained:<path>#sha256:<first 12 hex>``, ``none``, ``random-fallback`` or
        ``file:<abs path>#sha256:<first 12 hex>``.

    Raises:
        WeightsUnavailable: ImageNet weights unobtainable under ``imagenet``; no pretrained
            backbone under ``pretrained``; a weights file that is missing, unreadable or
            does not match ``arch``.
        ValueError: unknown ``arch``.
    """
    weights_file(arch)  # validates arch
    if policy == "none":
        return None, "none"
    backbone = pretrained_file(arch, pretrained_dir)
    if policy == "pretrained":
        if backbone is None or not backbone.is_file():
            raise WeightsUnavailable(
                f"weights: pretrained needs the SynthFACS-pretrained backbone {backbone}, which "
                "does not exist; make it with `dvc repro pretrain` (pretrain.archs must list "
                f"{arch!r}), or use weights: auto / none"
            )
        return _load_weights_path(arch, str(backbone), label="pretrained")
    if policy not in ("auto", "imagenet"):
        return _load_weights_path(arch, policy)
    state, why = _imagenet(arch)
    if state is not None:
        return state, "imagenet"
    if policy == "imagenet":
        raise WeightsUnavailable(
            why + " Or set `weights: auto` (the SynthFACS-pretrained backbone, else random "
            "initialisation) or `weights: none`."
        )
    if backbone is not None and backbone.is_file():
        state, source = _load_weights_path(arch, str(backbone), label="pretrained")
        warnings.warn(
            f"{why}\nweights: auto -> the SynthFACS-pretrained backbone {backbone} ('{source}').",
            UserWarning,
            stacklevel=2,
        )
        return state, source
    missing = f" No SynthFACS-pretrained backbone at {backbone} either (`dvc repro pretrain`)."
    warnings.warn(
        f"{why}{missing if backbone is not None else ''}\n"
        "weights: auto -> falling back to random initialisation ('random-fallback').",
        UserWarning,
        stacklevel=2,
    )
    return None, "random-fallback"


def _load_weights_path(
    arch: str, policy: str, label: str = "file"
) -> tuple[dict[str, Tensor], str]:
    given = Path(policy).expanduser()
    path = given.resolve()
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
    # The pretrained backbone is named as configured (a path relative to the workspace), so
    # the label, and the activation-cache keys built on it, are the same in every clone.
    shown = given.as_posix() if label == "pretrained" else str(path)
    return state, f"{label}:{shown}#sha256:{digest}"


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
