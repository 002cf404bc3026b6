"""``DepthAwareConv2d``: an ``nn.Conv2d`` whose forward weights each tap by depth similarity (Eq. 5–6).

It has exactly the parameters and state_dict keys of ``nn.Conv2d`` (plus a plain ``alpha`` attribute), so the
same weights load into either, and it reads depth from the current :func:`~depthdistill.depth_context`. It is the
first member of the depth-aware layer family (:mod:`depthdistill.nn.base`), registered for ``nn.Conv2d``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from depthdistill.errors import DepthError
from depthdistill.nn.arguments import check_groups, check_padding_mode, pair, resolve_padding
from depthdistill.nn.base import DepthAwareModule
# Pickles written before nn.base existed look the rebuild function up here, by this name.
from depthdistill.nn.base import rebuild_depth_aware as _rebuild_depth_aware  # noqa: F401
from depthdistill.nn.context import DepthResize
from depthdistill.nn.functional import DEFAULT_ALPHA, depth_aware_conv2d

__all__ = ["DepthAwareConv2d"]

_CONV2D_SIGNATURE = inspect.signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)


class DepthAwareConv2d(DepthAwareModule, nn.Conv2d):
    """A 2-D convolution that weights every kernel tap by ``exp(-α·|D(p0+p) − D(p0)|)``.

    Constructed like ``nn.Conv2d`` (plus ``alpha``), or made from an existing convolution in place by
    :func:`~depthdistill.convert_to_depth_aware`. Its forward takes depth from the innermost
    :func:`~depthdistill.depth_context`, resized to this layer's input resolution.

    Subclasses of ``nn.Conv2d`` that override ``forward`` (timm's ``Conv2dSame`` and ``StdConv2d``,
    EfficientNet's static same-padding conv, …) are converted to a class derived from both this one and theirs:
    their own forward still runs (weight standardisation, same padding), and only its ``F.conv2d`` call is
    replaced by the depth-aware one.

    Args:
        *args: As ``nn.Conv2d``.
        alpha: α of Eq. 6 per metre of depth difference.
        depth_resize: How depth is brought to this layer's input when the depth context names no mode (see
            :func:`~depthdistill.depth_context`).
        **kwargs: As ``nn.Conv2d``.

    Raises:
        ConfigError: For a kernel size, stride or dilation below 1, a negative or unknown padding, ``groups``
            below 1 or not dividing the channels, an unknown ``padding_mode`` or ``depth_resize``, α negative or
            not finite (``ConfigTypeError`` for wrong types).

    Examples:
        >>> import torch, depthdistill
        >>> conv = DepthAwareConv2d(3, 8, 3, padding=1, alpha=8.3)
        >>> with depthdistill.depth_context(torch.rand(2, 1, 16, 16) + 0.5):
        ...     y = conv(torch.randn(2, 3, 16, 16))
        >>> y.shape
        torch.Size([2, 8, 16, 16])
    """

    #: The class this layer was converted from; ``convert_to_plain`` restores it.
    plain_class: type[nn.Conv2d] = nn.Conv2d

    @classmethod
    def same_as_plain(cls, module: nn.Module) -> bool:
        """A 1×1 convolution has a single tap, ``H ≡ 1``: D-Conv *is* the plain convolution, left plain."""
        return tuple(module.kernel_size) == (1, 1)

    def __init__(self, *args: Any, alpha: float = DEFAULT_ALPHA, depth_resize: DepthResize = "nearest",
                 **kwargs: Any) -> None:
        _check_conv_arguments(_CONV2D_INIT.bind(*args, **kwargs).arguments)
        super().__init__(*args, **kwargs)
        self.set_depth_options(alpha, depth_resize)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Conv2d's own argument name
        depth, cache = self.depth_for(input)
        if type(self).plain_class.forward is nn.Conv2d.forward:
            return depth_aware_conv2d(
                input, depth, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                self.alpha, padding_mode=self.padding_mode, cache=cache,
            )
        with _DepthAwareConvMode(self, input, depth, cache):
            return super().forward(input)


_CONV2D_INIT = inspect.signature(nn.Conv2d)


def _check_conv_arguments(given: dict[str, Any]) -> None:
    """The constructor's arguments checked as the functional op checks them, before ``nn.Conv2d`` sees them."""
    kernel = pair(given["kernel_size"], "kernel_size")
    stride = pair(given.get("stride", 1), "stride")
    dilation = pair(given.get("dilation", 1), "dilation")
    resolve_padding(given.get("padding", 0), kernel, stride, dilation)
    check_groups(given.get("groups", 1), given["in_channels"], given["out_channels"])
    check_padding_mode(given.get("padding_mode", "zeros"))


class _DepthAwareConvMode(TorchFunctionMode):
    """Runs a conv subclass's own forward, turning its ``F.conv2d`` on the layer's input into a depth-aware one.

    A forward may pad its input first (``F.pad`` or ``nn.ZeroPad2d``, as same-padding convs do); that pad is
    folded into the depth-aware convolution's padding, so depth stays aligned with the unpadded features and
    the padded border counts as missing depth.
    """

    def __init__(self, layer: DepthAwareConv2d, x: Tensor, depth: Tensor, cache: dict) -> None:
        super().__init__()
        self.layer, self.x, self.depth, self.cache = layer, x, depth, cache
        self.padded: list[tuple[Tensor, tuple[int, ...], str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.pad:
            out = func(*args, **kwargs)
            self._record_pad(out, *args, **kwargs)
            return out
        if func is F.conv2d:
            return self._conv(*args, **kwargs)
        return func(*args, **kwargs)

    def _record_pad(self, out: Tensor, input: Tensor, pad, mode: str = "constant", value=None) -> None:  # noqa: A002
        if input is self.x and len(pad) == 4:
            if mode == "constant" and value not in (None, 0, 0.0):
                return  # a non-zero constant border has no padding_mode counterpart; _conv reports it
            self.padded.append((out, tuple(int(p) for p in pad), "zeros" if mode == "constant" else mode))

    def _conv(self, *args, **kwargs) -> Tensor:
        bound = _CONV2D_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        name = type(self.layer).__name__
        pre_pad, mode = (0, 0, 0, 0), "zeros"
        if a["input"] is not self.x:
            match = next((p for p in self.padded if p[0] is a["input"]), None)
            if match is None:
                raise DepthError(
                    f"{name}.forward convolves a tensor derived from its input in a way depthdistill cannot align "
                    "with depth; exclude this layer from convert_to_depth_aware (exclude=...)"
                )
            _, pre_pad, mode = match
        weight = a["weight"]
        kernel = (weight.shape[-2], weight.shape[-1])
        stride, dilation = pair(a["stride"], "stride"), pair(a["dilation"], "dilation")
        own = resolve_padding(a["padding"], kernel, stride, dilation)
        if mode != "zeros" and any(own):
            raise DepthError(f"{name}.forward mixes {mode} padding with conv padding; exclude this layer")
        pads = tuple(p + q for p, q in zip(pre_pad, own))
        return depth_aware_conv2d(
            self.x, self.depth, weight, a["bias"], stride, pads, dilation, a["groups"], self.layer.alpha,
            padding_mode=mode, cache=self.cache,
        )

