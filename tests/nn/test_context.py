"""The depth context: visibility, nesting, threads, resizing and its errors."""

import threading

import pytest
import torch
import torch.nn.functional as F

from depthdistill import DepthAwareConv2d, DepthError, current_depth, depth_aware_conv2d, depth_context


def test_visible_inside_only_and_nested_inner_wins():
    outer, inner = torch.ones(1, 1, 4, 4), torch.full((1, 4, 4), 2.0)
    assert current_depth() is None
    with depth_context(outer):
        assert current_depth().data_ptr() == outer.data_ptr()
        with depth_context(inner):
            assert current_depth().shape == (1, 1, 4, 4)
            assert current_depth().eq(2.0).all()
        assert current_depth().data_ptr() == outer.data_ptr()
    assert current_depth() is None


def test_context_restored_after_exception():
    with pytest.raises(RuntimeError):
        with depth_context(torch.ones(1, 1, 2, 2)):
            raise RuntimeError("boom")
    assert current_depth() is None


def test_threads_see_their_own_depth():
    conv = DepthAwareConv2d(1, 1, 3, padding=1, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 6, 6)
    results, barrier = {}, threading.Barrier(2)

    def run(name, depth):
        with depth_context(depth):
            barrier.wait()  # both contexts are open at once
            results[name] = conv(x)

    flat = torch.ones(1, 1, 6, 6)
    step = torch.ones(1, 1, 6, 6)
    step[..., 3:] = 3.0
    threads = [threading.Thread(target=run, args=("flat", flat)), threading.Thread(target=run, args=("step", step))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    torch.testing.assert_close(results["flat"], F.conv2d(x, conv.weight, padding=1))
    torch.testing.assert_close(results["step"], depth_aware_conv2d(x, step, conv.weight, padding=1))
    assert not torch.allclose(results["flat"], results["step"])


def test_layer_resizes_depth_nearest_by_default():
    conv = DepthAwareConv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 4, 5)
    depth = torch.rand(2, 1, 8, 10) + 0.5
    with depth_context(depth):
        got = conv(x)
    want = depth_aware_conv2d(x, depth[:, :, ::2, ::2], conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_blending_resize_ignores_holes(mode):
    conv = DepthAwareConv2d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 4, 4)
    depth = torch.full((1, 1, 8, 8), 2.0)
    depth[..., :4, :] = 3.0  # a step, so that a wrongly weighted average would change the output
    depth[..., ::2, ::2] = 0.0  # holes must not drag the average towards 0 m
    with depth_context(depth, resize=mode):
        got = conv(x)
    want_depth = torch.full((1, 1, 4, 4), 2.0)
    want_depth[..., :2, :] = 3.0  # each 2x2 block averaged over its three valid pixels
    want = depth_aware_conv2d(x, want_depth, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(got, want)


def test_errors_name_depth():
    conv = DepthAwareConv2d(3, 4, 3, padding=1)
    with pytest.raises(DepthError, match="no depth is set"):
        conv(torch.randn(1, 3, 5, 5))
    with depth_context(torch.rand(2, 1, 5, 5)):
        with pytest.raises(DepthError, match="batch size"):
            conv(torch.randn(1, 3, 5, 5))
    for bad in (torch.rand(1, 3, 5, 5), torch.rand(5), torch.ones(1, 1, 5, 5, dtype=torch.int32), [[1.0]]):
        with pytest.raises(DepthError, match="depth"):
            with depth_context(bad):
                pass
    with pytest.raises(ValueError, match="resize"):
        with depth_context(torch.rand(1, 1, 5, 5), resize="cubic"):
            pass


def test_depth_moves_to_feature_device_and_is_memoised():
    from depthdistill.nn.context import depth_at
    depth = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with depth_context(depth):
        a, _ = depth_at(torch.zeros(1, 1, 4, 4), "nearest", "layer")
        b, _ = depth_at(torch.zeros(1, 2, 4, 4), "nearest", "layer")
        # a device other than the depth's
        on_meta, _ = depth_at(torch.zeros(1, 1, 4, 4, device="meta"), "nearest", "layer")
    assert a is b  # one resize per resolution and device
    assert a.device == depth.device and a.dtype == torch.float64  # the depth's values, not rounded to the features'
    torch.testing.assert_close(a, depth[..., ::2, ::2], rtol=0, atol=0)
    assert on_meta.device.type == "meta" and on_meta.shape == (1, 1, 4, 4) and on_meta is not a


def test_avgpool_resize_averages_valid_depth_over_3x3_stride_2_windows():
    from depthdistill.nn.context import resize_depth

    depth = torch.rand(2, 1, 9, 7, dtype=torch.float64) + 0.5
    depth[0, 0, 0:3, 0:3] = 0.0  # a hole covering one whole output window
    depth[1, 0, 4, 2] = float("nan")
    out = resize_depth(depth, (5, 4), "avgpool")
    expected = torch.zeros(2, 1, 5, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                window = depth[b, 0, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2].flatten()
                valid = window[torch.isfinite(window) & (window > 0)]
                expected[b, 0, i, j] = valid.mean() if valid.numel() else 0.0
    torch.testing.assert_close(out, expected)
    assert out[0, 0, 0, 0] == 0.0  # no valid depth in the window: stays missing
    # two halvings for a quarter size: the pooling applied twice
    twice = resize_depth(depth, (3, 2), "avgpool")
    torch.testing.assert_close(twice, resize_depth(out, (3, 2), "avgpool"))
    # a size halvings cannot reach (upsampling) falls back to the hole-aware area resize
    torch.testing.assert_close(resize_depth(depth, (18, 14), "avgpool"), resize_depth(depth, (18, 14), "area"))


def test_avgpool_resize_reaches_the_layers_through_the_context():
    conv = DepthAwareConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 5)
    depth = torch.rand(1, 1, 8, 10) + 0.5
    with depth_context(depth, resize="avgpool"):
        got = conv(x)
    pooled = F.avg_pool2d(depth, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(got, depth_aware_conv2d(x, pooled, conv.weight, conv.bias, padding=1))


def test_transposed_depth_is_refused_but_strided_rounding_is_resized():
    conv = DepthAwareConv2d(2, 3, 3, padding=1)
    with depth_context(torch.rand(1, 1, 48, 32) + 0.5):  # H and W swapped against the 32x48 features
        with pytest.raises(DepthError, match=r"depth is 48x32 .*features are 32x48.*transposed"):
            conv(torch.randn(1, 2, 32, 48))
    with depth_context(torch.rand(1, 1, 32, 48) + 0.5):  # another image size, same short side
        with pytest.raises(DepthError, match="not one scale"):
            conv(torch.randn(1, 2, 32, 32))
    # what strided networks produce from a 33x50 image: ceil (stride 8 -> 5x7), floor (stride 2 -> 16x25),
    # unpadded (3x3 stride 2 -> 16x24)
    depth = torch.rand(1, 1, 33, 50) + 0.5
    for h, w in ((5, 7), (16, 25), (16, 24), (1, 1)):
        with depth_context(depth):
            assert conv(torch.randn(1, 2, h, w)).shape == (1, 3, h, w)


def test_depth_smaller_than_the_image_is_refused_with_the_rule():
    """Depth at half the image's size: the layer at the image's resolution would have to invent depth."""
    conv = DepthAwareConv2d(2, 3, 3, padding=1)
    with depth_context(torch.rand(1, 1, 16, 24) + 0.5):
        with pytest.raises(DepthError, match=r"depth is 16x24 .*features are 32x48, larger than depth.*size of the "
                                             r"image the model takes"):
            conv(torch.randn(1, 2, 32, 48))
        assert conv(torch.randn(1, 2, 16, 24)).shape == (1, 3, 16, 24)  # layers at or below its size still run


@pytest.fixture
def units_check_fresh(monkeypatch):
    import depthdistill.nn.context as context
    monkeypatch.setattr(context, "_units_checks_left", context._UNITS_CHECKS)


def test_depth_in_millimetres_warns_once_per_process(units_check_fresh, recwarn):
    import warnings

    from depthdistill import DepthUnitsWarning
    metres = torch.rand(1, 1, 6, 6) * 4 + 0.5
    with depth_context(metres):
        pass
    assert not [w for w in recwarn if w.category is DepthUnitsWarning]
    with pytest.warns(DepthUnitsWarning, match=r"millimetres; convert it: depth / 1000") as caught:
        with depth_context(metres * 1000):
            pass
    assert caught[0].filename == __file__  # points at the caller's `with`
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with depth_context(metres * 1000):  # once per process
            pass
