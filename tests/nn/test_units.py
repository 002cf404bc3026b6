"""The depth units check: the median valid depth against a plausible range of metres."""

import numpy as np
import pytest
import torch

from depthdistill import ConfigError, DepthError
from depthdistill.nn import units
from depthdistill.nn.units import check_depth_units, depth_units_problem


def _scene(n=2000, seed=0):
    """Indoor-like metres: 0.6..6 m, a third of the pixels missing (0) and a few NaN."""
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(n, generator=g) * 5.4 + 0.6
    depth[: n // 3] = 0.0
    depth[n // 3: n // 3 + 10] = float("nan")
    return depth


def test_metres_pass_and_holes_do_not_count():
    check_depth_units(_scene())
    check_depth_units(_scene().numpy())
    check_depth_units(torch.zeros(4, 4))  # nothing valid: nothing to judge (the data checks report empty depth)


@pytest.mark.parametrize("scale, unit, fix", [(1000, "millimetres", "depth / 1000"),
                                               (100, "centimetres", "depth / 100")])
def test_wrong_unit_is_named_with_its_fix(scale, unit, fix):
    depth = _scene() * scale
    valid = depth[torch.isfinite(depth) & (depth > 0)]
    with pytest.raises(DepthError, match=f"looks like {unit}; convert it: {fix}") as err:
        check_depth_units(depth, where="x.npy")
    assert "x.npy" in str(err.value) and f"{float(valid.median()):.4g}" in str(err.value)


def test_too_small_and_configurable_range(monkeypatch):
    with pytest.raises(DepthError, match="scaled down about 1000x"):
        check_depth_units(_scene() / 1000)
    far = _scene() * 10  # street-level 6..60 m: outside the default, fine with a wider range
    with pytest.raises(DepthError):
        check_depth_units(far)
    check_depth_units(far, depth_range=(0.1, 100.0))
    monkeypatch.setattr(units, "DEPTH_RANGE", (0.1, 100.0))
    assert depth_units_problem(far) is None
    with pytest.raises(ConfigError, match="depth_range"):
        check_depth_units(far, depth_range=(5.0, 1.0))


def test_large_maps_are_judged_on_a_sample():
    depth = np.full((1000, 1000), 2500.0, dtype=np.float32)  # 1e6 values, more than the sample
    assert "millimetres" in depth_units_problem(depth)
