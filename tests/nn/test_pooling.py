"""Depth-aware average pooling: against a brute-force loop of the definition, gradcheck, nn.AvgPool2d, the layer."""

import math

import pytest
import torch
import torch.nn as nn

from depthdistill import ConfigError, DepthAwareAvgPool2d, depth_aware_avg_pool2d, depth_context


def _valid(d):
    return math.isfinite(d) and d > 0


def _reference(x, depth, k, s, p, count_include_pad, alpha):
    """y(p0) = Σ H x / Σ H, written out tap by tap (float64); H = 1 where either depth is missing or padded."""
    batch, channels, height, width = x.shape
    out_h, out_w = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    out = torch.zeros(batch, channels, out_h, out_w, dtype=torch.float64)
    for b in range(batch):
        for oy in range(out_h):
            for ox in range(out_w):
                cy, cx = oy * s - p + (k - 1) // 2, ox * s - p + (k - 1) // 2
                centre_in = 0 <= cy < height and 0 <= cx < width
                d0 = float(depth[b, 0, cy, cx]) if centre_in else float("nan")
                num = torch.zeros(channels, dtype=torch.float64)
                den = 0.0
                for i in range(k):
                    for j in range(k):
                        y, xx = oy * s - p + i, ox * s - p + j
                        inside = 0 <= y < height and 0 <= xx < width
                        if not inside and not count_include_pad:
                            continue
                        d = float(depth[b, 0, y, xx]) if inside else float("nan")
                        h = math.exp(-alpha * abs(d - d0)) if _valid(d) and _valid(d0) else 1.0
                        if inside:
                            num += h * x[b, :, y, xx].double()
                        den += h
                out[b, :, oy, ox] = num / den
    return out


def _depth_with_holes(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.6 + 1.0
    depth[..., :, : shape[-1] // 2] += 0.5  # an edge
    depth[0, 0, 1, 2] = 0.0
    depth[0, 0, 3, 3] = float("nan")
    depth[-1, 0, 0, 0] = -1.0
    return depth


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 1, 1), (3, 2, 1), (3, 2, 0), (2, 2, 1), (2, 1, 0)])
def test_matches_brute_force_definition_with_holes_and_padding(k, s, p, count_include_pad):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    depth = _depth_with_holes((2, 1, 6, 7))
    got = depth_aware_avg_pool2d(x, depth, k, s, p, count_include_pad=count_include_pad, alpha=2.0)
    want = _reference(x, depth, k, s, p, count_include_pad, alpha=2.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and depth really acts: the plain pool differs
    assert (got - nn.functional.avg_pool2d(x, k, s, p, False, count_include_pad)).abs().max() > 1e-3


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_gradcheck_wrt_x(count_include_pad):
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    depth = _depth_with_holes((1, 1, 5, 5))
    assert torch.autograd.gradcheck(
        lambda t: depth_aware_avg_pool2d(t, depth, 3, 2, 1, count_include_pad=count_include_pad, alpha=3.0), (x,))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 3, 1)])
def test_constant_depth_is_exactly_nn_avgpool2d(k, s, p, count_include_pad):
    x = torch.randn(2, 4, 9, 8)
    plain = nn.AvgPool2d(k, s, p, count_include_pad=count_include_pad)
    aware = DepthAwareAvgPool2d(k, s, p, count_include_pad=count_include_pad)
    with depth_context(torch.full((2, 1, 9, 8), 2.5)):
        assert torch.equal(aware(x), plain(x))


def test_layer_takes_depth_from_the_context_at_its_resolution():
    x, depth = torch.randn(1, 2, 4, 4), torch.rand(1, 1, 8, 8) * 3 + 0.5
    pool = DepthAwareAvgPool2d(3, stride=1, padding=1, alpha=4.0)
    with depth_context(depth):
        got = pool(x)
    resized = nn.functional.interpolate(depth, size=(4, 4), mode="nearest")  # the context's default resize
    torch.testing.assert_close(got, depth_aware_avg_pool2d(x, resized, 3, 1, 1, alpha=4.0))
    assert "alpha=4" in repr(pool)
    assert list(pool.state_dict()) == [] and pool.stride == 1


def test_unsupported_options_raise_config_error():
    with pytest.raises(ConfigError, match="ceil_mode"):
        DepthAwareAvgPool2d(3, ceil_mode=True)
    with pytest.raises(ConfigError, match="divisor_override"):
        DepthAwareAvgPool2d(3, divisor_override=4)
    x, depth = torch.randn(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    with pytest.raises(ConfigError, match="half the kernel"):
        depth_aware_avg_pool2d(x, depth, 3, padding=2)
    with pytest.raises(ConfigError, match="smaller than the window"):
        depth_aware_avg_pool2d(x, depth, 5)
