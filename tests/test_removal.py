"""removal_report and calibrate_removal against D-Conv and plain convolutions written out by hand."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import depthdistill
from depthdistill import ConfigError, DepthError, calibrate_removal, removal_report

ALPHA = 1.0


class Net(nn.Module):
    """Three 3×3 convolutions, the last two at half resolution; ``head`` is registered first but runs last."""

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.head = nn.Conv2d(4, 2, 3, padding=1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.mid = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.norm(self.stem(x))), 2)
        return self.head(F.relu(self.mid(x)))


def teacher(bn: bool = False) -> Net:
    return depthdistill.convert_to_depth_aware(Net(bn), alpha=ALPHA)


def batch(seed: int, constant: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    depth = torch.full((2, 1, 8, 8), 2.0) if constant else 0.5 + 3 * torch.rand(2, 1, 8, 8, generator=g)
    if not constant:
        depth[0, 0, 2:4, 5] = 0.0  # a hole: missing depth
    return {"rgb": torch.randn(2, 3, 8, 8, generator=g), "depth": depth, "label": torch.zeros(2, 8, 8).long()}


def conv_by_hand(x, depth, layer, use_depth):
    """A 3×3 stride-1 padding-1 convolution tap by tap, each tap weighted by H of Eq. 6 (or 1).

    Returns the output and the sum and count of H over off-centre taps where both depths are valid.
    """
    h_img, w_img = x.shape[-2:]
    xp, dp = F.pad(x, (1, 1, 1, 1)), F.pad(depth, (1, 1, 1, 1))  # padded depth 0 = missing
    out = layer.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, h_img, w_img).clone()
    h_sum, h_count = 0.0, 0
    for i in range(3):
        for j in range(3):
            xs, ds = xp[..., i : i + h_img, j : j + w_img], dp[..., i : i + h_img, j : j + w_img]
            ok = (ds > 0) & (depth > 0)
            h = torch.where(ok, torch.exp(-ALPHA * (ds - depth).abs()), torch.ones_like(ds))
            if use_depth:
                xs = xs * h
            out = out + torch.einsum("oc,bchw->bohw", layer.weight[:, :, i, j], xs)
            if (i, j) != (1, 1):
                h_sum += float(h[ok].double().sum())
                h_count += int(ok.sum())
    return out, h_sum, h_count


def forward_by_hand(net, b, use_depth):
    """Per layer: (output, H sum, H count), the layers run by hand with nearest-resized depth."""
    small = F.interpolate(b["depth"], size=(4, 4), mode="nearest")
    outs = {"stem": conv_by_hand(b["rgb"], b["depth"], net.stem, use_depth)}
    x = F.max_pool2d(F.relu(net.norm(outs["stem"][0])), 2)
    outs["mid"] = conv_by_hand(x, small, net.mid, use_depth)
    outs["head"] = conv_by_hand(F.relu(outs["mid"][0]), small, net.head, use_depth)
    return outs


def pooled_by_hand(net, batches, use_depth):
    """Per layer: RMS over all batches' outputs, and mean H over all valid off-centre taps."""
    with torch.no_grad():
        runs = [forward_by_hand(net.eval(), b, use_depth) for b in batches]
    result = {}
    for name in ("stem", "mid", "head"):
        sq = sum(float(r[name][0].double().square().sum()) for r in runs)
        n = sum(r[name][0].numel() for r in runs)
        result[name] = (math.sqrt(sq / n), sum(r[name][1] for r in runs) / sum(r[name][2] for r in runs))
    return result


def test_report_matches_layers_run_by_hand():
    net, batches = teacher(), [batch(1), batch(2)]
    report = removal_report(net, batches)
    assert [r.name for r in report.layers] == ["stem", "mid", "head"]  # forward order, not registration order
    dconv, plain = pooled_by_hand(net, batches, True), pooled_by_hand(net, batches, False)
    for row in report.layers:
        assert row.mean_h == pytest.approx(dconv[row.name][1], rel=1e-9)
        assert row.rms_depth_aware == pytest.approx(dconv[row.name][0], rel=1e-5)
        assert row.rms_plain == pytest.approx(plain[row.name][0], rel=1e-5)
        assert row.ratio == pytest.approx(plain[row.name][0] / dconv[row.name][0], rel=1e-5)
        assert 0 < row.mean_h < 0.9 and row.ratio != pytest.approx(1, abs=1e-3)  # depth really matters here
    text = report.to_markdown()
    assert text.count("\n") == 4 and "| stem |" in text
    assert report.to_dict()["layers"][1]["name"] == "mid"


def test_constant_depth_gives_h_one_and_ratio_one():
    report = removal_report(teacher(), batch(3, constant=True))
    for row in report.layers:
        assert row.mean_h == 1.0
        assert row.ratio == pytest.approx(1.0, abs=1e-6)  # D-Conv's GEMMs and F.conv2d round differently


def test_model_left_as_it_came():
    for fn in (removal_report, calibrate_removal):
        net = teacher(bn=True)
        net.train()
        net.mid.eval()  # a mixed mode must come back as it was
        classes = {name: type(m) for name, m in net.named_modules()}
        params = dict(net.named_parameters())
        fn(net, batch(4))
        assert {name: type(m) for name, m in net.named_modules()} == classes
        assert all(m.alpha == ALPHA for m in (net.stem, net.mid, net.head))
        assert [m.training for m in net.modules()] == [True, True, True, True, False]
        assert all(p is params[name] and p.grad is None for name, p in net.named_parameters())


def test_depth_aware_pools_come_back_too():
    net = depthdistill.convert_to_depth_aware(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                      nn.Conv2d(4, 2, 3, padding=1)), alpha=2.0, pooling=True)
    for fn in (removal_report, calibrate_removal):
        result = fn(net, batch(2))
        assert depthdistill.list_depth_aware(net) == ["0", "1", "2"] and net[1].alpha == 2.0
    assert list(result) == ["0", "2"]  # the pool has no weights to calibrate


def test_calibrated_plain_network_is_as_loud_as_the_teacher():
    net, batches = teacher(), [batch(5), batch(6)]
    reference = pooled_by_hand(net, batches, True)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    params = dict(net.named_parameters())
    scales = calibrate_removal(net, batches, bn=False)
    assert list(scales) == ["stem", "mid", "head"]
    assert all(p is params[name] for name, p in net.named_parameters())
    assert all(torch.equal(p, before[name] * scales[name.split(".")[0]]) for name, p in net.named_parameters())
    plain = pooled_by_hand(net, batches, False)
    for name in scales:
        assert plain[name][0] == pytest.approx(reference[name][0], rel=1e-5)
    assert all(s != pytest.approx(1, abs=1e-3) for s in scales.values())


def test_constant_depth_scales_are_exactly_one():
    net = teacher()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    scales = calibrate_removal(net, [batch(7, constant=True), batch(8, constant=True)])
    assert scales == {"stem": 1.0, "mid": 1.0, "head": 1.0}
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_batchnorm_statistics_re_estimated_on_rgb():
    net, batches = teacher(bn=True), [batch(9), batch(10)]
    net.norm.running_mean.fill_(5.0)
    net.norm.running_var.fill_(7.0)
    calibrate_removal(net, batches, bn=True)
    with torch.no_grad():
        stems = [F.conv2d(b["rgb"], net.stem.weight, net.stem.bias, padding=1) for b in batches]
    mean = torch.stack([s.mean((0, 2, 3)) for s in stems]).mean(0)
    var = torch.stack([s.var((0, 2, 3), unbiased=True) for s in stems]).mean(0)
    torch.testing.assert_close(net.norm.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.norm.running_var, var, rtol=1e-5, atol=1e-6)
    assert net.norm.momentum == 0.1 and int(net.norm.num_batches_tracked) == 2


@pytest.mark.parametrize("bn", [False, True])
def test_batches_from_a_one_shot_iterable_equal_the_same_batches_as_a_list(bn):
    from_list, from_generator, from_one = teacher(bn), teacher(bn), teacher(bn)
    from_generator.load_state_dict(from_list.state_dict())
    from_one.load_state_dict(from_list.state_dict())
    scales = calibrate_removal(from_list, [batch(i) for i in (11, 12)], bn=bn)
    once = calibrate_removal(from_generator, (batch(i) for i in (11, 12)), bn=bn)  # read once, held for every pass
    assert once == scales and len(scales) == 3
    assert scales != calibrate_removal(from_one, [batch(11)], bn=bn)  # the second batch counts
    for (name, a), b in zip(from_list.state_dict().items(), from_generator.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_bad_input():
    with pytest.raises(ConfigError, match="convert_to_depth_aware"):
        removal_report(Net(), batch(0))
    with pytest.raises(ConfigError, match="convert_to_depth_aware"):
        calibrate_removal(Net(), [batch(0)])
    no_depth = {k: v for k, v in batch(0).items() if k != "depth"}
    with pytest.raises(DepthError, match="depth"):
        removal_report(teacher(), no_depth)
    with pytest.raises(DepthError, match="depth"):
        calibrate_removal(teacher(), [no_depth])
    with pytest.raises(ConfigError, match="no batch"):
        calibrate_removal(teacher(), [])
    with pytest.raises(DepthError):  # depth for a different batch size
        removal_report(teacher(), {**batch(0), "depth": torch.ones(3, 1, 8, 8)})
