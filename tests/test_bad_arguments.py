"""Bad arguments of every public operator and constructor raise the library's errors, naming argument and value.

Each row: a call, the error type, and what the message must contain (the argument's name and the bad value).
ConfigError is also a ValueError and ConfigTypeError also a TypeError, so both families are checked as such too.
"""

import math
import re

import pytest
import torch
import torch.nn as nn

from depthdistill import (
    ConfigError,
    ConfigTypeError,
    DepthAwareAvgPool2d,
    DepthAwareConv2d,
    DepthDistillError,
    convert_to_depth_aware,
    depth_aware_avg_pool2d,
    depth_aware_conv2d,
    depth_context,
    depth_similarity,
)
from depthdistill.engine import TrainSettings, fit

X, DEPTH, W = torch.randn(1, 4, 8, 8), torch.rand(1, 1, 8, 8) + 0.5, torch.randn(6, 4, 3, 3)


def conv(**kwargs):
    return lambda: depth_aware_conv2d(X, DEPTH, kwargs.pop("weight", W), **kwargs)


def pool(**kwargs):
    return lambda: depth_aware_avg_pool2d(X, DEPTH, kwargs.pop("kernel_size", 3), **kwargs)


def similarity(**kwargs):
    return lambda: depth_similarity(DEPTH, kwargs.pop("kernel_size", 3), **kwargs)


def layer(**kwargs):
    return lambda: DepthAwareConv2d(4, 6, kwargs.pop("kernel_size", 3), **kwargs)


def pool_layer(**kwargs):
    return lambda: DepthAwareAvgPool2d(kwargs.pop("kernel_size", 3), **kwargs)


def _fit(epochs):
    data = [{"rgb": torch.zeros(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long)}]
    return lambda: fit(nn.Conv2d(3, 2, 1), lambda m, b, e: {"loss": m(b["rgb"]).sum()}, data, epochs=epochs,
                       settings=TrainSettings(progress=False))


def _context(resize):
    def run():
        with depth_context(DEPTH, resize=resize):
            pass
    return run


CASES = [
    # what, call, error, words the message must hold
    ("conv stride 0", conv(stride=0), ConfigError, ["stride", "0"]),
    ("conv stride negative", conv(stride=-2), ConfigError, ["stride", "-2"]),
    ("conv stride wrong length", conv(stride=(1, 1, 1)), ConfigError, ["stride", "(1, 1, 1)"]),
    ("conv stride float", conv(stride=1.5), ConfigTypeError, ["stride", "1.5"]),
    ("conv dilation 0", conv(dilation=0), ConfigError, ["dilation", "0"]),
    ("conv padding negative", conv(padding=-1), ConfigError, ["padding", "-1"]),
    ("conv padding string", conv(padding="full"), ConfigError, ["padding", "'full'"]),
    ("conv padding 3 entries", conv(padding=(1, 1, 1)), ConfigError, ["padding", "(1, 1, 1)"]),
    ("conv groups 0", conv(groups=0), ConfigError, ["groups", "0"]),
    ("conv groups not dividing", conv(groups=3), ConfigError, ["groups=3", "4"]),
    ("conv kernel 0", conv(weight=torch.randn(6, 4, 0, 3)), ConfigError, ["kernel_size", "(0, 3)"]),
    ("conv alpha negative", conv(alpha=-1.0), ConfigError, ["alpha", "-1.0"]),
    ("conv alpha nan", conv(alpha=math.nan), ConfigError, ["alpha", "nan"]),
    ("conv alpha string", conv(alpha="8.3"), ConfigTypeError, ["alpha", "'8.3'"]),
    ("conv padding mode", conv(padding_mode="mirror"), ConfigError, ["padding_mode", "'mirror'"]),
    ("pool stride 0", pool(stride=0), ConfigError, ["stride", "0"]),
    ("pool padding negative", pool(padding=-1), ConfigError, ["padding", "-1"]),
    ("pool kernel 0", pool(kernel_size=0), ConfigError, ["kernel_size", "0"]),
    ("pool alpha nan", pool(alpha=math.nan), ConfigError, ["alpha", "nan"]),
    ("pool alpha bool", pool(alpha=True), ConfigTypeError, ["alpha", "True"]),
    ("similarity stride 0", similarity(stride=0), ConfigError, ["stride", "0"]),
    ("similarity dilation 0", similarity(dilation=0), ConfigError, ["dilation", "0"]),
    ("similarity padding negative", similarity(padding=-2), ConfigError, ["padding", "-2"]),
    ("similarity kernel wrong length", similarity(kernel_size=(3, 3, 3)), ConfigError, ["kernel_size", "(3, 3, 3)"]),
    ("similarity alpha negative", similarity(alpha=-0.5), ConfigError, ["alpha", "-0.5"]),
    ("layer stride 0", layer(stride=0), ConfigError, ["stride", "0"]),
    ("layer dilation 0", layer(dilation=0), ConfigError, ["dilation", "0"]),
    ("layer padding negative", layer(padding=-1), ConfigError, ["padding", "-1"]),
    ("layer padding string", layer(padding="full"), ConfigError, ["padding", "'full'"]),
    ("layer groups 0", layer(groups=0), ConfigError, ["groups", "0"]),
    ("layer groups not dividing", layer(groups=4), ConfigError, ["groups=4", "6"]),
    ("layer kernel 0", layer(kernel_size=0), ConfigError, ["kernel_size", "0"]),
    ("layer alpha negative", layer(alpha=-1), ConfigError, ["alpha", "-1"]),
    ("layer alpha string", layer(alpha="high"), ConfigTypeError, ["alpha", "'high'"]),
    ("layer depth resize", layer(depth_resize="cubic"), ConfigError, ["depth_resize", "'cubic'"]),
    ("layer padding mode", layer(padding_mode="mirror"), ConfigError, ["padding_mode", "'mirror'"]),
    ("pool layer stride 0", pool_layer(stride=0), ConfigError, ["stride", "0"]),
    ("pool layer padding negative", pool_layer(padding=-1), ConfigError, ["padding", "-1"]),
    ("pool layer alpha nan", pool_layer(alpha=math.nan), ConfigError, ["alpha", "nan"]),
    ("pool layer depth resize", pool_layer(depth_resize="linear"), ConfigError, ["depth_resize", "'linear'"]),
    ("context resize", _context("cubic"), ConfigError, ["resize", "'cubic'"]),
    ("convert alpha negative", lambda: convert_to_depth_aware(nn.Conv2d(1, 1, 3), alpha=-1.0), ConfigError,
     ["alpha", "-1.0"]),
    ("convert alpha string", lambda: convert_to_depth_aware(nn.Conv2d(1, 1, 3), alpha="8"), ConfigTypeError,
     ["alpha", "'8'"]),
    ("convert depth resize", lambda: convert_to_depth_aware(nn.Conv2d(1, 1, 3), depth_resize="cubic"), ConfigError,
     ["depth_resize", "'cubic'"]),
    ("convert not a module", lambda: convert_to_depth_aware("vgg16"), ConfigTypeError, ["nn.Module", "str"]),
    ("settings batch size 0", lambda: TrainSettings(batch_size=0), ConfigError, ["batch_size", "0"]),
    ("settings batch size bool", lambda: TrainSettings(batch_size=True), ConfigTypeError, ["batch_size", "True"]),
    ("settings batch size float", lambda: TrainSettings(batch_size=2.0), ConfigTypeError, ["batch_size", "2.0"]),
    ("settings workers negative", lambda: TrainSettings(num_workers=-1), ConfigError, ["num_workers", "-1"]),
    ("settings lr 0", lambda: TrainSettings(lr=0.0), ConfigError, ["lr", "0.0"]),
    ("settings lr string", lambda: TrainSettings(lr="1e-3"), ConfigTypeError, ["lr", "'1e-3'"]),
    ("fit epochs 0", _fit(0), ConfigError, ["epochs", "0"]),
    ("fit epochs float", _fit(2.0), ConfigTypeError, ["epochs", "2.0"]),
    ("fit epochs bool", _fit(True), ConfigTypeError, ["epochs", "True"]),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_raises_the_library_error_naming_argument_and_value(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, DepthDistillError)
    assert isinstance(caught.value, TypeError if error is ConfigTypeError else ValueError)
    message = str(caught.value)
    for word in words:
        assert re.search(rf"(?<![\w.]){re.escape(word)}(?![\w.])", message), f"{word!r} not in {message!r}"


def test_valid_geometry_still_matches_nn_conv2d():
    """The checks let through what nn.Conv2d accepts: one-element stride and dilation, "same", explicit 4-tuples."""
    plain = nn.Conv2d(4, 6, 3, stride=(1,), padding="same", dilation=(2,), groups=2)
    aware = DepthAwareConv2d(4, 6, 3, stride=(1,), padding="same", dilation=(2,), groups=2)
    aware.load_state_dict(plain.state_dict())
    with torch.no_grad(), depth_context(torch.ones(1, 1, 8, 8)):
        torch.testing.assert_close(aware(X), plain(X))
    got = depth_aware_conv2d(X, torch.ones(1, 1, 8, 8), W, padding=(0, 1, 2, 0))
    torch.testing.assert_close(got, nn.functional.conv2d(nn.functional.pad(X, (0, 1, 2, 0)), W))
