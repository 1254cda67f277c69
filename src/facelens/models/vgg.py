"""VGG16 / VGG16-BN for faces: the five-block backbone, its two heads, the freeze policy.

The backbone is torchvision's ``vgg.features`` (rebuilt here layer for layer, so loading a
model never imports torchvision) split into its five conv blocks (each ending with its
MaxPool), so ImageNet state dicts load into it after a key rename
(``features.<i>.*`` -> ``blocks.<b>.<j>.*``). Two heads are offered:

- ``classifier``: torchvision's ``avgpool`` (7x7) + ``classifier`` with the last Linear
  replaced (keys ``classifier.0/3/6`` match torchvision, so the 4096-wide layers load too);
- ``pooled``: global average pool -> dropout -> ``Linear(512, num_outputs)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from facelens.models.params import Arch

__all__ = ["ARCHS", "FaceVGG", "Head", "apply_freeze", "vgg16_features"]

Head = Literal["classifier", "pooled"]

#: The architectures :class:`FaceVGG` builds (``model.arch`` in params.yaml).
ARCHS: tuple[str, ...] = get_args(Arch)
_NUM_BLOCKS = 5
#: VGG16's conv layout (torchvision's ``cfgs["D"]``): (output channels, 3x3 convs) per block;
#: every block ends with a 2x2 max pool.
_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_features(batch_norm: bool) -> nn.Sequential:
    """torchvision's ``make_layers(cfgs["D"], batch_norm)``: the same layers, created in the same
    order (so a seeded build draws the same numbers), without importing torchvision, whose
    import pulls in ``torch._dynamo`` (about a second of every cold start that loads a model)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for channels, convs in _VGG16_BLOCKS:
        for _ in range(convs):
            layers.append(nn.Conv2d(in_channels, channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


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
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}; got {arch!r}")
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
        features = vgg16_features(batch_norm=arch == "vgg16_bn")
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
        # Same scheme as torchvision.models.VGG.__init__. Built on the meta device (to assign a
        # state dict, see models.export) there is nothing to draw, and normal_ of a meta tensor
        # would import torch._dynamo (about a second of a cold start).
        if next(self.parameters()).is_meta:
            return
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
