"""Third-party networks as segmenters: an image batch in, logits at the input size out.

Two thin builders, so that smp and timm models enter the depth-removal distillation exactly like
:func:`~depthdistill.models.deeplab_vgg16`: :func:`smp_model` returns a segmentation_models_pytorch model
unchanged; :class:`TimmSegmenter` puts a small convolutional head on a timm ``features_only`` backbone. Both are
plain ``nn.Module`` s whose spatial convolutions :func:`~depthdistill.convert_to_depth_aware` can swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.models._checks import check_num_classes, unknown_name

__all__ = ["TimmSegmenter", "smp_model"]


def smp_model(
    arch: str,
    encoder_name: str,
    num_classes: int,
    encoder_weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a segmentation_models_pytorch model (``Unet``, ``DeepLabV3Plus``, ``FPN`` …) for ``num_classes``.

    The model is returned as smp builds it: images ``(B, 3, H, W)`` in, logits ``(B, num_classes, H, W)`` out.
    Most smp decoders want ``H`` and ``W`` divisible by the encoder's output stride (32 for most encoders).

    Args:
        arch: Architecture name, any case: ``"Unet"``, ``"UnetPlusPlus"``, ``"FPN"``, ``"DeepLabV3Plus"``,
            ``"PSPNet"`` … (the keys of ``smp.MODEL_ARCHITECTURES_MAPPING``).
        encoder_name: An smp encoder (``"resnet34"``, ``"mobilenet_v2"`` …) or a timm one as ``"tu-<timm name>"``.
        num_classes: Number of output channels.
        encoder_weights: ``None`` for random weights (the default here, unlike smp's, so nothing is downloaded
            unless asked), or the name of the encoder's pretrained weights, e.g. ``"imagenet"``.
        **kwargs: Passed to the architecture's constructor (``in_channels``, ``decoder_channels`` …).

    Returns:
        The smp model.

    Raises:
        ConfigError: If the architecture or encoder is unknown, or smp rejects the combination.

    Examples:
        >>> import torch
        >>> model = smp_model("FPN", "resnet18", num_classes=4)
        >>> model.eval()(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 4, 64, 64])
    """
    check_num_classes(num_classes)
    architectures = smp.MODEL_ARCHITECTURES_MAPPING
    if not isinstance(arch, str) or arch.lower() not in architectures:
        raise unknown_name("smp architecture", str(arch), [cls.__name__ for cls in architectures.values()],
                           f"Choose one of {sorted(cls.__name__ for cls in architectures.values())}.")
    encoders = smp.encoders.get_encoder_names()
    timm_encoder = isinstance(encoder_name, str) and encoder_name.startswith("tu-")
    if timm_encoder and not timm.is_model(encoder_name[3:]):
        raise unknown_name("timm encoder", encoder_name[3:], timm.list_models(),
                           "After 'tu-' give a name from timm.list_models().")
    if not timm_encoder and encoder_name not in encoders:
        raise unknown_name("smp encoder", str(encoder_name), encoders,
                           "See smp.encoders.get_encoder_names(), or use any timm model as 'tu-<name>'.")
    try:
        return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                classes=num_classes, **kwargs)
    except (KeyError, ValueError, TypeError) as error:  # smp's own argument checks
        raise ConfigError(f"smp cannot build {arch} with encoder {encoder_name!r}: {error}") from error


class TimmSegmenter(nn.Module):
    """A timm backbone (``features_only``) with a small head: image batch in, logits at the input size out.

    The head projects every feature level with a 1×1 convolution to ``head_channels``, upsamples them
    bilinearly to the finest level's size and sums them, then applies ReLU, a 3×3 convolution, ReLU and a
    1×1 classifier; the logits are upsampled bilinearly to the input size. It has no normalisation layer, so it
    trains with any batch size, including the paper's batch of 1.

    Args:
        backbone_name: Any timm model that supports ``features_only`` (``"resnet18"``, ``"convnext_atto"`` …).
        num_classes: Number of output channels.
        pretrained: Load timm's pretrained backbone weights (downloaded by timm); off by default.
        out_indices: Which feature levels to fuse (timm's indices); ``None`` takes all of them.
        head_channels: Width of the head.
        **backbone_kwargs: Passed to ``timm.create_model`` (``in_chans``, ``output_stride`` …).

    Raises:
        ConfigError: If the backbone is unknown or cannot produce feature maps.

    Examples:
        >>> import torch
        >>> model = TimmSegmenter("resnet18", num_classes=3, out_indices=(1, 2, 3), head_channels=16)
        >>> model(torch.rand(2, 3, 48, 40)).shape
        torch.Size([2, 3, 48, 40])
    """

    def __init__(
        self,
        backbone_name: str,
        num_classes: int,
        pretrained: bool = False,
        out_indices: Sequence[int] | None = None,
        head_channels: int = 64,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
            raise ConfigError(f"head_channels must be a positive int, got {head_channels!r}")
        if not isinstance(backbone_name, str) or not timm.is_model(backbone_name):
            raise unknown_name("timm backbone", str(backbone_name), timm.list_models(),
                               "Give a name from timm.list_models().")
        if out_indices is not None:
            backbone_kwargs["out_indices"] = tuple(out_indices)
        try:
            self.backbone = timm.create_model(backbone_name, pretrained=pretrained, features_only=True,
                                              **backbone_kwargs)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as error:
            raise ConfigError(f"timm cannot build {backbone_name!r} as a feature extractor "
                              f"(features_only=True, {backbone_kwargs}): {error}") from error
        self.lateral = nn.ModuleList(nn.Conv2d(channels, head_channels, 1)
                                     for channels in self.backbone.feature_info.channels())
        self.fuse = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(head_channels, head_channels, 3, padding=1),
                                  nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images ``(B, C, H, W)`` to logits ``(B, num_classes, H, W)``."""
        features = self.backbone(x)
        # timm orders feature levels from fine to coarse, so the first one sets the fusion resolution.
        size = features[0].shape[-2:]
        fused = sum(F.interpolate(project(level), size=size, mode="bilinear", align_corners=False)
                    for project, level in zip(self.lateral, features, strict=True))
        logits = self.classifier(self.fuse(fused))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
