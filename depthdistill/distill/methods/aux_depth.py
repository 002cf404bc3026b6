"""Depth as an auxiliary training target: an RGB model trained with cross-entropy on the labelled images plus a
small head that predicts each image's depth map from one intermediate layer's features.

Depth is never an input here, only a target: the head is attached for training (a forward hook on the layer) and
dropped afterwards, so the deployable model is the plain model itself. The loss of the head is the scale-invariant
log loss of Eigen et al. (NIPS 2014). The control (row ``SN-RGB``) is the same training with every image's depth
target replaced by *another* image's depth (:class:`~depthdistill.distill.methods.shifted_depth.ShiftedDepth`):
the head still regularises the shared features, but what it learns no longer belongs to the image, so SN − SN-RGB
is what the image's own depth adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.distill.experiment import row_folder
from depthdistill.distill.methods.base import Method
from depthdistill.distill.methods.shifted_depth import ShiftedDepth
from depthdistill.engine.distributed import unwrap
from depthdistill.errors import ConfigError
from depthdistill.nn import valid_depth

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["AuxiliaryDepth", "default_aux_depth_layer", "si_log_loss"]

#: Width of the head's hidden 3×3 convolution (fewer when the layer has fewer channels): small beside the model.
_HEAD_CHANNELS = 64


def si_log_loss(log_prediction: torch.Tensor, depth: torch.Tensor, *, scale_invariance: float) -> torch.Tensor:
    """The scale-invariant log loss (Eigen et al. 2014) over the pixels where depth was measured.

    Per image, with ``d = log ŷ − log y`` over its ``n`` valid pixels (:func:`~depthdistill.nn.valid_depth`: holes
    are excluded): ``mean(d²) − λ_si · mean(d)²``; the result is the mean over the images that have any valid
    pixel (0, still differentiable, when none has).

    Args:
        log_prediction: Predicted log-depth ``(B, 1, H, W)`` (log metres), at the depth's size.
        depth: Measured depth ``(B, 1, H, W)`` in metres; 0, negative, NaN or infinite is missing.
        scale_invariance: ``λ_si`` in ``[0, 1]``: 0 is the mean squared log error, 1 ignores one global scale
            per image.

    Returns:
        A scalar tensor.

    Examples:
        >>> depth = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]]]])
        >>> float(si_log_loss((2 * depth).clamp_min(1e-3).log(), depth, scale_invariance=1.0)) < 1e-12
        True
    """
    valid = valid_depth(depth)
    # Holes get a placeholder depth of 1 so that no NaN or -inf enters the graph; where() drops them after.
    d = torch.where(valid, log_prediction - torch.where(valid, depth, torch.ones_like(depth)).log(),
                    torch.zeros_like(log_prediction))
    count = valid.flatten(1).sum(1)
    kept = count > 0
    if not bool(kept.any()):
        return log_prediction.sum() * 0.0
    n = count[kept].to(d.dtype)
    mean_d = d.flatten(1)[kept].sum(1) / n
    mean_d2 = d.pow(2).flatten(1)[kept].sum(1) / n
    return (mean_d2 - scale_invariance * mean_d.pow(2)).mean()


def default_aux_depth_layer(model: nn.Module) -> str:
    """The layer whose output feeds the depth head when ``aux_depth_layer`` is ``None``: the second-to-last
    ``nn.Conv2d`` of ``model.named_modules()``, taking the last one to be the classifier (``classifier.3``, fc7,
    in DeepLab-VGG16).

    Raises:
        ConfigError: If the model has fewer than two convolutions (name the layer with ``aux_depth_layer``).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 2, 1))
        >>> default_aux_depth_layer(net)
        '2'
    """
    convolutions = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if len(convolutions) < 2:
        raise ConfigError(f"{type(model).__name__} has {len(convolutions)} convolution(s), so there is no default "
                          "layer for the auxiliary depth head (the last convolution before the classifier): name "
                          f"one with aux_depth_layer; the model's layers: {_layer_names(model)}")
    return convolutions[-2]


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


class _WithDepthHead(nn.Module):
    """The model and the depth head as one module, so that the training loop optimises (and checkpoints) both.

    A forward hook keeps the layer's output; in training mode the forward also runs the head on it and keeps the
    predicted log-depth in :attr:`log_depth` (computed inside the forward, as DDP requires of every parameter it
    reduces). The forward returns the model's own output, so the Distiller's forward and validation see the model.
    """

    def __init__(self, model: nn.Module, layer: str, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.layer = layer
        self.log_depth: torch.Tensor | None = None
        self._features: torch.Tensor | None = None
        self._hook = dict(model.named_modules())[layer].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.training:
            # A copy: an in-place op after the layer (DeepLab's ReLU(inplace=True) after fc7) would otherwise change
            # the features before the head reads them, once the model's forward has finished.
            self._features = output.clone()

    def forward(self, rgb: torch.Tensor) -> Any:
        output = self.model(rgb)
        features, self._features = self._features, None
        self.log_depth = self.head(features) if self.training else None
        return output

    def release(self) -> nn.Module:
        """Removes the hook and returns the model alone."""
        self._hook.remove()
        self.log_depth = self._features = None
        return self.model


def _check_features(output: Any, layer: str) -> None:
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        what = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else \
            f"a {type(output).__name__}"
        raise ConfigError(f"aux_depth_layer {layer!r} returns {what}; the depth head needs a (B, C, H, W) feature "
                          "map: name a convolution or another layer that returns one")


def _head(channels: int) -> nn.Module:
    """3×3 conv → ReLU → 1×1 conv to one channel: the log-depth (its exp is the positive depth)."""
    hidden = min(channels, _HEAD_CHANNELS)
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))


def _feature_channels(distiller: Distiller, model: nn.Module, layer: str, train_data: Data) -> int:
    """The layer's channel count, read from one forward of the first training batch in eval mode (no dropout draw,
    no running statistics changed)."""
    seen: list[Any] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        batch = distiller.sample_batches(train_data, 1)[0]
        model.to(distiller.device).eval()
        with torch.no_grad():
            model(batch["rgb"])
    finally:
        handle.remove()
        model.train()
    if not seen:
        raise ConfigError(f"aux_depth_layer {layer!r} did not run in {type(model).__name__}'s forward: name a layer "
                          "the forward uses")
    _check_features(seen[-1], layer)
    return int(seen[-1].shape[1])


def train_aux_depth(distiller: Distiller, train_data: Data, epochs: int, val_data: Data | None, *,
                    name: str) -> nn.Module:
    """Trains a plain copy of the model from the initial weights with CE plus ``aux_depth_weight`` times the
    scale-invariant log loss of the depth head on ``train_data``'s depth; returns the model without the head.

    Raises:
        ConfigError: If ``aux_depth_layer`` is not a layer of the model (the layers are listed) or does not return a
            feature map.
        DepthError: If training samples have no depth.
    """
    s = distiller.settings
    distiller.check_data(train_data, needs_depth=True, where=f"{name} training data")
    model = distiller.initial_copy()
    layer = default_aux_depth_layer(model) if s.aux_depth_layer is None else s.aux_depth_layer
    if layer not in dict(model.named_modules()):
        raise ConfigError(f"aux_depth_layer {layer!r} is not a layer of {type(model).__name__}; its layers: "
                          f"{_layer_names(model)}")
    channels = _feature_channels(distiller, model, layer, train_data)
    # Its own seed and a forked generator: the head starts the same in SN and its control, and the model's
    # training draws nothing less or more than without it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(distiller.train_settings.seed or 0)
        trained = _WithDepthHead(model, layer, _head(channels))
    distiller.log.say(name, f"auxiliary depth head on {layer!r} ({channels} channels), weight "
                            f"{s.aux_depth_weight:g}, scale invariance {s.aux_depth_scale_invariance:g}")

    def loss_fn(wrapped: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        logits = distiller.forward(wrapped, batch).float()
        ce = F.cross_entropy(logits, batch["label"], ignore_index=distiller.ignore_index)
        depth = batch["depth"]
        log_depth = F.interpolate(unwrap(wrapped).log_depth.float(), size=depth.shape[-2:], mode="bilinear",
                                  align_corners=False)
        depth_loss = si_log_loss(log_depth, depth.float(), scale_invariance=s.aux_depth_scale_invariance)
        return {"loss": ce + s.aux_depth_weight * depth_loss, "ce": ce.detach(), "depth": depth_loss.detach()}

    try:
        distiller.fit_phase(name, trained, loss_fn, train_data, epochs, val_data, needs_depth=True,
                            deployable=model)
    finally:
        trained.release()
    return model


class AuxiliaryDepth(Method):
    """An RGB model from the initial weights, trained with CE plus an auxiliary head that predicts the depth map
    from one layer's features (``aux_depth_layer``), with the scale-invariant log loss (``aux_depth_weight``,
    ``aux_depth_scale_invariance``); depth is a target only, never an input.

    The method has no teacher: it trains ``student_epochs`` epochs (``teacher_epochs`` is unused). The head is a
    3×3 convolution (at most 64 channels) → ReLU → 1×1 convolution to the log-depth, upsampled bilinearly to the
    depth's size. The returned model is the plain model (same class and state_dict keys as the Distiller's, no head
    and no hook). The phase's checkpoints (``sn/``, ``sn_rgb/``) hold the model and the head together (keys
    ``model.…`` and ``head.…``), so that a resumed run continues the head too; the model's own weights are the
    ``model.`` entries.

    Its control (row ``SN-RGB``, :meth:`train_control`) is the same training with each image's depth target
    replaced by another image's (:class:`ShiftedDepth`).
    """

    name: ClassVar[str] = "aux_depth"
    trains_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = "CE plus an auxiliary head predicting depth (scale-invariant log loss) from one layer"

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        return train_aux_depth(distiller, train_data, student_epochs, val_data, name=row_folder("SN"))

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The same training, each image's depth target another image's: sample ``i`` trains against the depth of
        sample ``(i + 1) mod n`` of the training set (:class:`ShiftedDepth`; a map-style dataset is needed)."""
        shifted = ShiftedDepth(train_data, control="the aux_depth control")
        return train_aux_depth(distiller, shifted, student_epochs, val_data, name=row_folder("SN-RGB"))
