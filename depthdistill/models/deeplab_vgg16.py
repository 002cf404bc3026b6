"""DeepLab-LargeFOV on VGG16, the segmentation network of the paper's experiments.

The layout follows DeepLab v1 "LargeFOV" (Chen et al., ICLR 2015): the thirteen 3×3 convolutions of VGG16, max
pools of 3×3 / stride 2 / pad 1 after blocks 1–3 and 3×3 / stride 1 / pad 1 after blocks 4 and 5 (output stride
8), block 5 dilated by 2, then ``fc6`` (3×3, dilation 12, 1024 channels), ``fc7`` (1×1, 1024) and ``fc8`` (1×1 to
the classes), each of the first two followed by ReLU and dropout 0.5. Between pool5 and fc6 sits DeepLab-LargeFOV's
``pool5a``, a 3×3 / stride 1 / pad 1 average pool (no parameters). The logits are upsampled bilinearly to the input
size, so the model maps an image batch ``(B, 3, H, W)`` to logits ``(B, C, H, W)`` like any other segmenter.

Only ``nn.Conv2d``, ``nn.ReLU``, ``nn.MaxPool2d``, ``nn.AvgPool2d`` and ``nn.Dropout`` are used, so
:func:`~depthdistill.convert_to_depth_aware` turns every 3×3 convolution (conv1_1 … conv5_3 and fc6) into a
depth-aware one; :data:`DEPTH_AWARE_CNN_LAYERS` selects the six that Depth-aware CNN (the network the paper builds
on) makes depth-aware. ``features`` keeps the module indices of ``torchvision.models.vgg16().features``, so a
torchvision VGG16 state_dict loads into it key for key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.models._checks import check_num_classes

__all__ = ["DEPTH_AWARE_CNN_LAYERS", "DeepLabVGG16", "deeplab_vgg16"]

#: VGG16's convolution widths per block (torchvision configuration "D").
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: Stride of the max pool closing each block: 2, 2, 2 gives output stride 8; blocks 4 and 5 keep the resolution.
_POOL_STRIDES = (2, 2, 2, 1, 1)
#: Dilation of each block's convolutions: block 5 follows the two stride-1 pools (DeepLab's "hole" algorithm).
_BLOCK_DILATIONS = (1, 1, 1, 1, 2)
_FC_CHANNELS = 1024
_FC6_DILATION = 12
_DROPOUT = 0.5

#: The layers Depth-aware CNN (Wang & Neumann, ECCV 2018, ``models/VGG_Deeplab.py``) makes depth-aware in its
#: DeepLab-VGG16: the first convolution of each VGG block (conv1_1, conv2_1, conv3_1, conv4_1, conv5_1) and fc6.
#: Pass it as ``include`` to :func:`~depthdistill.convert_to_depth_aware` or the Distiller.
DEPTH_AWARE_CNN_LAYERS: tuple[str, ...] = ("features.0", "features.5", "features.10", "features.17", "features.24",
                                           "classifier.0")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class DeepLabVGG16(nn.Module):
    """DeepLab-LargeFOV with a VGG16 backbone (output stride 8, logits at the input size).

    Build it with :func:`deeplab_vgg16`, which also loads ImageNet weights.

    Attributes:
        features: VGG16's conv1_1 … pool5, with the module indices of ``torchvision.models.vgg16().features``
            (convolutions at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), then ``pool5a`` at 31 when enabled.
        classifier: fc6, ReLU, dropout, fc7, ReLU, dropout, fc8 (indices 0 … 6), all convolutions.

    Args:
        num_classes: Number of output channels (classes).
        width: Channel multiplier of every layer but the input and fc8.
        pool5a: Add DeepLab-LargeFOV's 3×3 / stride 1 average pool after pool5 (``False``: the network of earlier
            depthdistill versions, which lacked it).

    The class attribute ``depth_aware_layers`` (:data:`DEPTH_AWARE_CNN_LAYERS`) names the layers Depth-aware CNN
    makes depth-aware; the :class:`~depthdistill.Distiller`'s default preset converts those.

    Examples:
        >>> import torch
        >>> model = DeepLabVGG16(num_classes=5, width=0.125)
        >>> model(torch.zeros(1, 3, 40, 56)).shape
        torch.Size([1, 5, 40, 56])
    """

    #: The layers a depth-aware teacher converts by default (Depth-aware CNN's selection).
    depth_aware_layers: tuple[str, ...] = DEPTH_AWARE_CNN_LAYERS

    def __init__(self, num_classes: int, width: float = 1.0, pool5a: bool = True) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ConfigError(f"width must be a positive number (1.0 is the paper's network), got {width!r}")
        self.num_classes = num_classes
        self.width = float(width)

        layers: list[nn.Module] = []
        in_channels = 3
        for widths, pool_stride, dilation in zip(_VGG16_BLOCKS, _POOL_STRIDES, _BLOCK_DILATIONS, strict=True):
            for channels in widths:
                out_channels = _scaled(channels, width)
                layers += [nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
                           nn.ReLU(inplace=True)]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(3, stride=pool_stride, padding=1))
        if pool5a:
            layers.append(nn.AvgPool2d(3, stride=1, padding=1))
        self.pool5a = bool(pool5a)
        self.features = nn.Sequential(*layers)

        fc = _scaled(_FC_CHANNELS, width)
        self.classifier = nn.Sequential(
            nn.Conv2d(in_channels, fc, 3, padding=_FC6_DILATION, dilation=_FC6_DILATION),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(_DROPOUT),
            nn.Conv2d(fc, fc, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(_DROPOUT),
            nn.Conv2d(fc, num_classes, 1),  # fc8
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation keeps a 16-layer plain ReLU network trainable from scratch (the paper's "No
        # Initialization" rows); PyTorch's default init shrinks the signal layer by layer. fc8 gets DeepLab's
        # small Gaussian so the first logits are near zero (uniform softmax).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier[-1].weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images ``(B, 3, H, W)`` to logits ``(B, num_classes, H, W)``."""
        size = x.shape[-2:]
        logits = self.classifier(self.features(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def deeplab_vgg16(
    num_classes: int,
    pretrained_backbone: bool | str | os.PathLike = False,
    width: float = 1.0,
    pool5a: bool = True,
) -> DeepLabVGG16:
    """Builds DeepLab-LargeFOV on VGG16, optionally with ImageNet weights in conv1_1 … conv5_3.

    At ``width=1`` the network has 20,483,904 + 1025 × ``num_classes`` parameters (≈ 20.5 M).
    fc6, fc7 and fc8 are always freshly initialised: VGG16's fully connected layers (4096 wide, 7×7) do not
    fit DeepLab-LargeFOV's 1024-wide, 3×3-dilated fc6.

    Args:
        num_classes: Number of classes (output channels).
        pretrained_backbone: ``False`` for random weights; ``True`` for torchvision's ImageNet VGG16 weights
            (``VGG16_Weights.IMAGENET1K_V1``, downloaded once into torchvision's cache); or the path of a local
            torchvision VGG16 state_dict file (what ``torch.save(torchvision.models.vgg16().state_dict(), path)``
            writes, or the file torchvision downloads).
        width: Channel multiplier (``0.125`` gives a model small enough for CPU runs). Pretrained weights need
            ``width=1``.
        pool5a: DeepLab-LargeFOV's average pool between pool5 and fc6 (see :class:`DeepLabVGG16`).

    Returns:
        A :class:`DeepLabVGG16` in training mode, on the CPU.

    Raises:
        ConfigError: If an argument is out of range, or the weights file is missing, unreadable or not a
            torchvision VGG16 state_dict.

    Examples:
        >>> import torch
        >>> model = deeplab_vgg16(num_classes=13, width=0.125)
        >>> model(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 13, 64, 48])
    """
    model = DeepLabVGG16(num_classes, width=width, pool5a=pool5a)
    if pretrained_backbone is False:
        return model
    if model.width != 1.0:
        raise ConfigError(f"pretrained VGG16 weights fit only width=1.0, got width={width}; "
                          "train a slim model from scratch (pretrained_backbone=False) instead")
    if pretrained_backbone is True:
        from torchvision.models import VGG16_Weights

        state, source = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True), "torchvision IMAGENET1K_V1"
    elif isinstance(pretrained_backbone, (str, os.PathLike)):
        state, source = _read_state_dict(Path(pretrained_backbone)), str(pretrained_backbone)
    else:
        raise ConfigError("pretrained_backbone must be False, True (torchvision's ImageNet weights) or the path "
                          f"of a torchvision VGG16 state_dict file, got {pretrained_backbone!r}")
    _load_vgg16_features(model, state, source)
    return model


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"VGG16 weights file {path} does not exist; pass the path of a torchvision VGG16 "
                          "state_dict (torch.save(torchvision.models.vgg16(...).state_dict(), path))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged or foreign file
        raise ConfigError(f"cannot read VGG16 weights from {path}: {error}. Expected a torchvision VGG16 "
                          "state_dict saved with torch.save") from error
    if not isinstance(state, Mapping):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state_dict; save "
                          "torchvision.models.vgg16(...).state_dict(), not the model or a checkpoint")
    return state


def _load_vgg16_features(model: DeepLabVGG16, state: Mapping[str, Tensor], source: str) -> None:
    targets = {f"features.{index}.{kind}": getattr(layer, kind)
               for index, layer in enumerate(model.features) if isinstance(layer, nn.Conv2d)
               for kind in ("weight", "bias")}
    missing = [key for key in targets if key not in state]
    if missing:
        raise ConfigError(f"{source} is not a torchvision VGG16 state_dict: {len(missing)} of VGG16's conv "
                          f"tensors are missing (first: {missing[:3]}). Use plain vgg16 weights, not vgg16_bn "
                          "or another network")
    wrong = [f"{key}: file {_describe(state[key])}, model {tuple(param.shape)}"
             for key, param in targets.items()
             if not isinstance(state[key], Tensor) or state[key].shape != param.shape]
    if wrong:
        raise ConfigError(f"{source} does not match VGG16's conv shapes ({'; '.join(wrong[:3])}); "
                          "expected torchvision's vgg16 state_dict")
    with torch.no_grad():
        for key, param in targets.items():
            param.copy_(state[key])


def _describe(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__
