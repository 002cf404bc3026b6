"""DepthAwareConv2d as a layer: parameters, state_dict, forward against the functional op, hooks."""

import torch
import torch.nn as nn

from depthdistill import DepthAwareConv2d, depth_aware_conv2d, depth_context
from depthdistill.nn import depth_aware_class


def test_same_parameters_and_state_dict_as_conv2d():
    plain = nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1, groups=1)
    aware = DepthAwareConv2d(3, 8, 3, stride=2, padding=1, alpha=5.0)
    assert list(plain.state_dict()) == list(aware.state_dict())
    aware.load_state_dict(plain.state_dict())
    assert aware.alpha == 5.0 and "alpha=5" in repr(aware)
    x, depth = torch.randn(2, 3, 9, 9), torch.rand(2, 1, 9, 9) + 1
    with depth_context(depth):
        got = aware(x)
    torch.testing.assert_close(got, depth_aware_conv2d(x, depth, plain.weight, plain.bias, 2, 1, alpha=5.0))
    with depth_context(torch.ones(2, 9, 9)):
        torch.testing.assert_close(aware(x), plain(x))


def test_padding_mode_layer():
    aware = DepthAwareConv2d(2, 2, 3, padding=1, padding_mode="reflect")
    plain = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    plain.load_state_dict(aware.state_dict())
    x = torch.randn(1, 2, 5, 5)
    with depth_context(torch.ones(1, 1, 5, 5)):
        torch.testing.assert_close(aware(x), plain(x))


def test_class_for_subclass_is_cached_and_keeps_isinstance():
    class MyConv(nn.Conv2d):
        pass

    cls = depth_aware_class(MyConv)
    assert cls is depth_aware_class(MyConv)
    assert issubclass(cls, MyConv) and issubclass(cls, DepthAwareConv2d) and cls.plain_class is MyConv


def test_compiled_teacher_matches_eager_without_recompiling():
    """torch.compile (dynamo, eager backend) traces the context read; new depth tensors must not recompile."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from depthdistill import convert_to_depth_aware

    torch._dynamo.reset()
    model = convert_to_depth_aware(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                                 nn.Conv2d(4, 4, 3, padding=2, dilation=2)))

    def teacher(rgb, depth):
        with depth_context(depth):
            return model(rgb)

    compiled = torch.compile(teacher, backend="eager")
    graphs = []
    for seed in range(3):  # every call brings a fresh depth tensor at a new address
        gen = torch.Generator().manual_seed(seed)
        rgb, depth = torch.randn(2, 3, 8, 8, generator=gen), torch.rand(2, 1, 8, 8, generator=gen) + 0.5
        torch.testing.assert_close(compiled(rgb, depth), teacher(rgb, depth))
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] > 0 and graphs[2] == graphs[0], f"graphs compiled after each call: {graphs}"
