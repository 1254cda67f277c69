"""VGG16 / VGG16-BN for faces: weights policy, heads, freeze policy, layer names, export.

The backbone is torchvision's ``vgg.features`` split into its five conv blocks (each ending
with its MaxPool), so ImageNet state dicts load into it after a key rename
(``features.<i>.*`` -> ``blocks.<b>.<j>.*``). Two heads are offered:

- ``classifier``: torchvision's ``avgpool`` (7x7) + ``classifier`` with the last Linear
  replaced (keys ``classifier.0/3/6`` match torchvision, so the 4096-wide layers load too);
- ``pooled``: global average pool -> dropout -> ``Linear(512, num_outputs)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from facelens._io import atomic_path, atomic_write_text
from facelens.data.transforms import ImageTransform, make_transform
from facelens.errors import WeightsUnavailable
from facelens.models.params import Arch, ModelParams

__all__ = [
    "DEFAULT_NORM",
    "IMAGENET_NORM",
    "FaceVGG",
    "ModelMeta",
    "apply_freeze",
    "build_model",
    "default_cam_layer",
    "export_model",
    "load_exported",
    "norm_stats",
    "resolve_cam_layer",
    "resolve_weights",
    "weights_file",
]

Head = Literal["classifier", "pooled"]

#: Smallest block-5 map side (input / 16) at which block 5 is the default Grad-CAM layer.
_MIN_BLOCK5_MAP = 7


def default_cam_layer(input_size: int) -> str:
    """The Grad-CAM layer for ``auto``: ``block5`` when its maps are at least 7 x 7 (input
    >= 112 px, as at ImageNet's 224 px), else ``block4``.

    At 64 px block 5's maps are 4 x 4: one cell covers a quarter of the face, too coarse to
    separate the mouth from the brows; block 4's are 8 x 8.
    """
    return "block5" if int(input_size) // 16 >= _MIN_BLOCK5_MAP else "block4"


def resolve_cam_layer(layer: str, input_size: int) -> str:
    """``layer`` itself, or :func:`default_cam_layer` when it is ``auto``."""
    return default_cam_layer(input_size) if layer == "auto" else layer


#: Image normalisation (mean, std) for ImageNet-pretrained backbones.
IMAGENET_NORM: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)
#: Image normalisation (mean, std) for backbones trained from scratch.
DEFAULT_NORM: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.5, 0.5, 0.5),
    (0.25, 0.25, 0.25),
)

_TORCHVISION_WEIGHTS = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
}
_POLICIES = ("auto", "imagenet", "none")
_NUM_BLOCKS = 5
_OFFLINE_ENV = "FACELENS_OFFLINE"


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _split_blocks(features: nn.Sequential) -> tuple[list[nn.Sequential], list[tuple[int, int]]]:
    """Split torchvision's ``features`` at each MaxPool; return blocks and index map."""
    blocks: list[nn.Sequential] = []
    index: list[tuple[int, int]] = []  # torchvision feature index -> (block, position)
    current: list[nn.Module] = []
    for layer in features:
        if isinstance(layer, nn.ReLU):
            # Not in-place: hooks (Grad-CAM, faithfulness) read block outputs safely.
            layer = nn.ReLU(inplace=False)
        index.append((len(blocks), len(current)))
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    return blocks, index


class FaceVGG(nn.Module):
    """VGG16 (optionally with BatchNorm) split into five blocks plus a small or classic head.

    Attributes:
        arch: ``vgg16`` or ``vgg16_bn``.
        head: ``classifier`` or ``pooled``.
        num_outputs: width of the output layer.
        blocks: the five conv blocks (each ending with its MaxPool).
        avgpool: adaptive average pool (7x7 for ``classifier``, 1x1 for ``pooled``).
        classifier: the head's layers; the last one is the output Linear.
        frozen_blocks: how many leading blocks are frozen (kept in eval mode by ``train()``).
    """

    def __init__(
        self,
        arch: Arch = "vgg16_bn",
        num_outputs: int = 7,
        head: Head = "pooled",
        dropout: float = 0.3,
    ) -> None:
        """Build a randomly initialised model (torchvision's initialisation scheme).

        Args:
            arch: ``vgg16`` or ``vgg16_bn``.
            num_outputs: number of classes or regression outputs.
            head: ``classifier`` (torchvision's 4096-wide MLP) or ``pooled`` (GAP + Linear).
            dropout: dropout probability in the head.

        Raises:
            ValueError: unknown arch or head, or invalid num_outputs / dropout.
        """
        super().__init__()
        if arch not in _TORCHVISION_WEIGHTS:
            raise ValueError(f"arch must be one of {sorted(_TORCHVISION_WEIGHTS)}; got {arch!r}")
        if head not in ("classifier", "pooled"):
            raise ValueError(f"head must be 'classifier' or 'pooled'; got {head!r}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1; got {num_outputs}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.arch: str = arch
        self.head: str = head
        self.num_outputs = int(num_outputs)
        self.dropout = float(dropout)
        self.frozen_blocks = 0
        features = make_layers(cfgs["D"], batch_norm=arch == "vgg16_bn")
        blocks, self._feature_index = _split_blocks(features)
        self.blocks = nn.ModuleList(blocks)
        if head == "classifier":
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, num_outputs),
            )
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_outputs))
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as torchvision.models.VGG.__init__.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    @property
    def embedding_dim(self) -> int:
        """Width of :meth:`embed`'s output (4096 for ``classifier``, 512 for ``pooled``)."""
        return 4096 if self.head == "classifier" else 512

    def train(self, mode: bool = True) -> FaceVGG:
        """Set train/eval mode; frozen blocks always stay in eval mode (BN statistics fixed)."""
        super().train(mode)
        for block in self.blocks[: self.frozen_blocks]:
            block.eval()
        return self

    def _check_k(self, k: int, low: int) -> None:
        if not low <= k <= _NUM_BLOCKS:
            raise ValueError(f"block index k must be in {low}..{_NUM_BLOCKS}; got {k}")

    def forward_prefix(self, x: Tensor, k: int) -> Tensor:
        """Run the first ``k`` blocks.

        Args:
            x: images ``(B, 3, H, W)``, normalised.
            k: number of blocks to run (0..5; 0 returns ``x``).

        Returns:
            Activations after block ``k``: ``(B, C_k, H / 2**k, W / 2**k)``.
        """
        self._check_k(k, 0)
        for block in self.blocks[:k]:
            x = block(x)
        return x

    def _features_from(self, acts: Tensor, k: int) -> Tensor:
        for block in self.blocks[k:]:
            acts = block(acts)
        return torch.flatten(self.avgpool(acts), 1)  # (B, 512 * 7 * 7) or (B, 512)

    def forward_from(self, acts: Tensor, k: int) -> Tensor:
        """Run the rest of the network from the activations after block ``k``.

        Args:
            acts: activations after block ``k`` (as returned by :meth:`forward_prefix`).
            k: number of blocks already applied (0..5).

        Returns:
            Outputs ``(B, num_outputs)``.
        """
        self._check_k(k, 0)
        return self.classifier(self._features_from(acts, k))

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(B, 3, H, W)`` to outputs ``(B, num_outputs)``."""
        return self.forward_from(x, 0)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, D)``: the input of the output Linear.

        ``D`` is 4096 for the ``classifier`` head and 512 (globally pooled block-5
        activations) for the ``pooled`` head. Dropout is active only in train mode.
        """
        return self.classifier[:-1](self._features_from(x, 0))

    def gradcam_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM target layers: the last ReLU of each block, keyed ``block1`` .. ``block5``."""
        out: dict[str, nn.Module] = {}
        for b, block in enumerate(self.blocks, start=1):
            relus = [m for m in block if isinstance(m, nn.ReLU)]
            out[f"block{b}"] = relus[-1]
        return out

    def from_torchvision_keys(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename torchvision VGG keys (``features.<i>.*``) to this model's (``blocks.<b>.<j>.*``).

        Keys that are not ``features.*`` (e.g. ``classifier.*``) pass through unchanged.
        """
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("features."):
                _, idx, rest = key.split(".", 2)
                i = int(idx)
                if i >= len(self._feature_index):
                    out[key] = value  # reported as unexpected by the caller
                    continue
                b, j = self._feature_index[i]
                out[f"blocks.{b}.{j}.{rest}"] = value
            else:
                out[key] = value
        return out


# --------------------------------------------------------------------------------------------
# Weights policy
# --------------------------------------------------------------------------------------------


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


def norm_stats(weights_source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Image normalisation (mean, std) that matches a ``weights_source``.

    ImageNet statistics for ``imagenet``; for ``file:`` sources the ``norm_mean``/``norm_std``
    of a ``meta.json`` next to the file when there is one (a facelens export), ImageNet
    statistics otherwise (torchvision checkpoints); (0.5, 0.25) per channel for random init.
    """
    if weights_source == "imagenet":
        return IMAGENET_NORM
    if weights_source.startswith("file:"):
        path = Path(weights_source.removeprefix("file:").rsplit("#sha256:", 1)[0])
        meta_path = path.parent / "meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                return tuple(meta["norm_mean"]), tuple(meta["norm_std"])
            except (ValueError, KeyError, TypeError):
                pass
        return IMAGENET_NORM
    return DEFAULT_NORM


def _load_into(model: FaceVGG, state: Mapping[str, Tensor]) -> None:
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


# --------------------------------------------------------------------------------------------
# Building, freezing
# --------------------------------------------------------------------------------------------


def apply_freeze(model: FaceVGG, trainable_blocks: int) -> int:
    """Freeze the leading ``5 - trainable_blocks`` conv blocks.

    Frozen blocks get ``requires_grad=False`` and are put (and kept, see ``FaceVGG.train``) in
    eval mode so BatchNorm statistics stay fixed. The head is always trainable. Calling it
    again re-applies the policy from scratch.

    Args:
        model: the model (modified in place).
        trainable_blocks: number of trailing blocks to train, 0..5.

    Returns:
        ``k``, the number of frozen blocks.

    Raises:
        ValueError: ``trainable_blocks`` outside 0..5.
    """
    if not 0 <= trainable_blocks <= _NUM_BLOCKS:
        raise ValueError(f"trainable_blocks must be in 0..{_NUM_BLOCKS}; got {trainable_blocks}")
    k = _NUM_BLOCKS - trainable_blocks
    for b, block in enumerate(model.blocks):
        for p in block.parameters():
            p.requires_grad_(b >= k)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    model.frozen_blocks = k
    model.train(model.training)
    return k


def build_model(
    params: ModelParams,
    *,
    num_outputs: int,
    head: Head = "pooled",
    dropout: float = 0.3,
    trainable_blocks: int = 5,
    seed: int | None = None,
) -> tuple[FaceVGG, str]:
    """Build a :class:`FaceVGG` with weights per ``params.weights`` and the freeze policy applied.

    Args:
        params: the ``model`` params section.
        num_outputs: output width (7 for expression, number of attributes otherwise).
        head: ``classifier`` or ``pooled``.
        dropout: dropout probability in the head.
        trainable_blocks: trailing blocks to train (0..5); the rest are frozen.
        seed: seed for the random initialisation (global RNG untouched); ``None`` uses
            the global torch RNG.

    Returns:
        ``(model, weights_source)``; see :func:`resolve_weights` for the labels.
    """
    state, source = resolve_weights(params.arch, params.weights)
    if seed is None:
        model = FaceVGG(params.arch, num_outputs=num_outputs, head=head, dropout=dropout)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FaceVGG(params.arch, num_outputs=num_outputs, head=head, dropout=dropout)
    if state is not None:
        _load_into(model, state)
    apply_freeze(model, trainable_blocks)
    return model, source


# --------------------------------------------------------------------------------------------
# Metadata, export
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild, feed and interpret an exported model."""

    task: str
    arch: str
    num_outputs: int
    output_names: tuple[str, ...]
    input_size: int
    head: str
    dropout: float
    weights_source: str
    norm_mean: tuple[float, ...]
    norm_std: tuple[float, ...]
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.output_names) != self.num_outputs:
            raise ValueError(
                f"output_names has {len(self.output_names)} names but num_outputs is "
                f"{self.num_outputs}; give one name per output"
            )
        for name in ("target_mean", "target_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_outputs:
                raise ValueError(f"{name} must have {self.num_outputs} values; got {len(value)}")

    @classmethod
    def for_model(
        cls,
        model: FaceVGG,
        *,
        task: str,
        output_names: Sequence[str],
        input_size: int,
        weights_source: str,
        norm: tuple[Sequence[float], Sequence[float]] = DEFAULT_NORM,
        target_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> ModelMeta:
        """The metadata of ``model`` (arch, head, dropout and width are read off it).

        Args:
            norm: image ``(mean, std)`` the model was trained with.
            target_stats: ``(mean, std)`` of the standardised attribute targets, or None.
        """
        return cls(
            task=task,
            arch=model.arch,
            num_outputs=model.num_outputs,
            output_names=tuple(output_names),
            input_size=int(input_size),
            head=model.head,
            dropout=model.dropout,
            weights_source=weights_source,
            norm_mean=tuple(float(x) for x in norm[0]),
            norm_std=tuple(float(x) for x in norm[1]),
            target_mean=None if target_stats is None else tuple(float(x) for x in target_stats[0]),
            target_std=None if target_stats is None else tuple(float(x) for x in target_stats[1]),
        )

    def target_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` of the standardised attribute targets, or None (expression task)."""
        if self.target_mean is None or self.target_std is None:
            return None
        return np.asarray(self.target_mean), np.asarray(self.target_std)

    def eval_transform(self) -> ImageTransform:
        """The evaluation transform of this model: no augmentation, the model's input size and
        image normalisation (what evaluate, explain, manifold and serving feed it)."""
        return make_transform(
            self.input_size,
            train=False,
            augment=0.0,
            norm_mean=self.norm_mean,
            norm_std=self.norm_std,
        )

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: not JSON, unknown or missing fields.
        """
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelMeta field(s) {unknown}; allowed: {sorted(known)}")
        for key in ("output_names", "norm_mean", "norm_std", "target_mean", "target_std"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"invalid ModelMeta JSON: {err}") from err


def export_model(model: FaceVGG, meta: ModelMeta, out_dir: Path) -> None:
    """Write ``out_dir/state_dict.pt`` and ``out_dir/meta.json``, each atomically.

    The state dict is written first, so a present ``meta.json`` implies a complete export.

    Raises:
        ValueError: ``meta`` disagrees with the model (arch, head or output width).
    """
    for name in ("arch", "head", "num_outputs"):
        if getattr(meta, name) != getattr(model, name):
            raise ValueError(
                f"meta.{name}={getattr(meta, name)!r} but the model has {getattr(model, name)!r}"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "state_dict.pt") as tmp:
        torch.save(state, tmp)
    atomic_write_text(out_dir / "meta.json", meta.to_json())


def load_exported(
    model_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[FaceVGG, ModelMeta]:
    """Load a model written by :func:`export_model`, in eval mode.

    Raises:
        FileNotFoundError: ``state_dict.pt`` or ``meta.json`` missing in ``model_dir``.
    """
    model_dir = Path(model_dir)
    missing = [n for n in ("state_dict.pt", "meta.json") if not (model_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir} is not an exported facelens model: missing {missing}. "
            "Point to the directory written by the train stage (e.g. models/model/)."
        )
    meta = ModelMeta.from_json((model_dir / "meta.json").read_text())
    with torch.device("meta"):  # skip the random initialisation; tensors come from the file
        model = FaceVGG(
            meta.arch,  # type: ignore[arg-type]
            num_outputs=meta.num_outputs,
            head=meta.head,  # type: ignore[arg-type]
            dropout=meta.dropout,
        )
    state = torch.load(model_dir / "state_dict.pt", map_location=map_location, weights_only=True)
    model.load_state_dict(state, assign=True)
    model.to(map_location)
    model.eval()
    return model, meta
