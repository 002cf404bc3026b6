"""Segmentation networks ready for depth-removal distillation: the paper's DeepLab-VGG16 and smp/timm wrappers.

Every model here maps an image batch ``(B, 3, H, W)`` to logits ``(B, num_classes, H, W)`` at the input size.
"""

from depthdistill.models.deeplab_vgg16 import DEPTH_AWARE_CNN_LAYERS, DeepLabVGG16, deeplab_vgg16
from depthdistill.models.segmenters import TimmSegmenter, smp_model

__all__ = ["DEPTH_AWARE_CNN_LAYERS", "DeepLabVGG16", "TimmSegmenter", "deeplab_vgg16", "smp_model"]
