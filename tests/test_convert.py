"""Graph surgery over a zoo of real models (random weights): torchvision, timm and smp."""

import copy
import logging

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn as nn
import torchvision

from depthdistill import (ConfigError, DepthAwareAvgPool2d, DepthAwareConv2d, DepthAwareModule, DepthError,
                          convert_to_depth_aware, convert_to_plain, depth_aware_avg_pool2d, depth_aware_conv2d,
                          depth_context, list_depth_aware, register_depth_aware)
from depthdistill.nn import depth_aware_class


def _tv(name, **kw):
    return lambda: getattr(torchvision.models, name)(weights=None, **kw)


def _timm(name):
    return lambda: timm.create_model(name, pretrained=False, num_classes=10)


def _smp(arch, encoder):
    return lambda: getattr(smp, arch)(encoder, encoder_weights=None, classes=3)


ZOO = {
    "tv_resnet18": (_tv("resnet18", num_classes=10), 32),
    "tv_mobilenet_v3_small": (_tv("mobilenet_v3_small", num_classes=10), 32),
    "tv_efficientnet_b0": (_tv("efficientnet_b0", num_classes=10), 32),
    "tv_convnext_tiny": (_tv("convnext_tiny", num_classes=10), 32),
    "timm_conv2dsame": (_timm("tf_mobilenetv3_small_minimal_100"), 33),
    "timm_stdconv2d": (_timm("resnetv2_50x1_bit"), 32),
    "timm_scaledstdconv2d": (_timm("nf_resnet26"), 32),
    "smp_unet": (_smp("Unet", "resnet18"), 64),
    "smp_deeplabv3plus": (_smp("DeepLabV3Plus", "resnet18"), 64),
    "smp_fpn": (_smp("FPN", "mobilenet_v2"), 64),
    "smp_unet_efficientnet_static_same": (_smp("Unet", "efficientnet-b0"), 64),
}


def _spatial_convs(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) != (1, 1)]


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_round_trip(name):
    build, size = ZOO[name]
    model = build().eval()
    classes = {n: type(m) for n, m in model.named_modules()}
    params = {n: p for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected_converted = _spatial_convs(model)
    rgb = torch.randn(2, 3, size, size)
    with torch.no_grad():
        plain_out = model(rgb)

    teacher = convert_to_depth_aware(model)
    assert teacher is model
    assert list_depth_aware(teacher) == expected_converted and expected_converted
    for layer_name in expected_converted:
        layer = teacher.get_submodule(layer_name)
        assert isinstance(layer, classes[layer_name])  # timm/smp subclasses keep their identity
    assert all(p is params[n] for n, p in teacher.named_parameters())

    with torch.no_grad():
        with depth_context(torch.full((2, 1, size, size), 1.7)):
            torch.testing.assert_close(teacher(rgb), plain_out, rtol=1e-4, atol=1e-4)
        depth = torch.rand(2, 1, size, size) * 5 + 0.3
        with depth_context(depth):
            varied = teacher(rgb)
    # some random-weight nets shrink their outputs to ~1e-10, so compare relative to the output's scale
    assert (varied - plain_out).abs().max() > 1e-2 * plain_out.abs().max()
    with pytest.raises(DepthError, match="no depth"):
        teacher(rgb)

    student = convert_to_plain(teacher)
    assert {n: type(m) for n, m in student.named_modules()} == classes
    assert all(p is params[n] for n, p in student.named_parameters())
    assert list(student.state_dict()) == list(state)
    for key, value in student.state_dict().items():
        assert torch.equal(value, state[key])
    with torch.no_grad():
        torch.testing.assert_close(student(rgb), plain_out)


def test_keeps_hooks_training_mode_and_device_and_converting_twice_is_harmless():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    model[0].double()
    model.train()
    model[0].eval()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    convert_to_depth_aware(model, alpha=3.0)
    convert_to_depth_aware(model, alpha=3.0)
    assert list_depth_aware(model) == ["0"] and model[0].alpha == 3.0
    assert model.training and not model[0].training and model[0].weight.dtype == torch.float64
    assert type(model[2]) is nn.Conv2d  # 1x1 stays plain
    with depth_context(torch.rand(1, 1, 5, 5)):
        model[0](torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert seen == [torch.Size([1, 4, 5, 5])]
    convert_to_plain(model)
    assert type(model[0]) is nn.Conv2d and not hasattr(model[0], "alpha")


def test_root_conv_and_include_exclude_and_logging(caplog):
    root = nn.Conv2d(3, 3, 3)
    with caplog.at_level(logging.INFO, logger="depthdistill"):
        assert convert_to_depth_aware(root) is root
    assert isinstance(root, DepthAwareConv2d) and "1 Conv2d layer(s) made depth-aware" in caplog.text

    def net():
        return nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv2d(3, 3, 3)), nn.Conv2d(3, 3, 3))

    assert list_depth_aware(convert_to_depth_aware(net(), include="0.*")) == ["0.0", "0.1"]
    assert list_depth_aware(convert_to_depth_aware(net(), exclude=["0.1", "1"])) == ["0.0"]
    assert list_depth_aware(convert_to_depth_aware(net(), include=lambda n, m: n == "1")) == ["1"]
    with pytest.raises(ValueError, match="selected none"):
        convert_to_depth_aware(net(), include="decoder.*")
    with pytest.raises(ValueError, match="has none"):
        convert_to_depth_aware(nn.Sequential(nn.Linear(2, 2), nn.Conv2d(2, 2, 1)))


def test_deepcopy_of_teacher_is_independent_and_depth_aware():
    teacher = convert_to_depth_aware(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)))
    frozen = copy.deepcopy(teacher)
    convert_to_plain(teacher)
    assert list_depth_aware(frozen) == ["0"] and list_depth_aware(teacher) == []
    assert frozen[0].weight is not teacher[0].weight


@pytest.mark.parametrize("name", ["tv_mobilenet_v3_small", "timm_conv2dsame", "smp_unet_efficientnet_static_same"])
def test_whole_converted_model_pickles_and_torch_saves(name, tmp_path):
    import io
    import pickle

    build, size = ZOO[name]
    teacher = convert_to_depth_aware(build().eval(), alpha=5.0)
    rgb, depth = torch.randn(1, 3, size, size), torch.rand(1, 1, size, size) * 4 + 0.5
    buffer = io.BytesIO()
    torch.save(teacher, buffer)
    buffer.seek(0)
    copies = [pickle.loads(pickle.dumps(teacher)), torch.load(buffer, weights_only=False)]
    with torch.no_grad(), depth_context(depth):
        want = teacher(rgb)
        for loaded in copies:
            assert {n: type(m) for n, m in loaded.named_modules()} == {n: type(m) for n, m in teacher.named_modules()}
            assert list_depth_aware(loaded) == list_depth_aware(teacher)
            assert all(loaded.get_submodule(n).alpha == 5.0 for n in list_depth_aware(loaded))
            torch.testing.assert_close(loaded(rgb), want, rtol=0, atol=0)
    made_at_run_time = {type(m) for m in teacher.modules() if isinstance(m, DepthAwareConv2d)} - {DepthAwareConv2d}
    assert bool(made_at_run_time) == (not name.startswith("tv_"))  # timm's Conv2dSame, smp's static same padding


def test_converting_again_with_another_alpha_updates_it(caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    convert_to_depth_aware(model, alpha=3.0)
    with caplog.at_level(logging.INFO, logger="depthdistill"):
        convert_to_depth_aware(model, alpha=5.0, exclude="1")
    assert (model[0].alpha, model[1].alpha) == (5.0, 3.0)  # exclude keeps a layer's alpha too
    assert "1 already depth-aware layer(s) changed to alpha=5, depth_resize=nearest (were 0: 3, nearest)" in caplog.text
    # the changed alpha is the one the forward uses
    x, depth = torch.randn(1, 3, 6, 6), torch.rand(1, 1, 6, 6) * 3 + 0.5
    from depthdistill import depth_aware_conv2d
    with depth_context(depth):
        got = model[0](x)
    torch.testing.assert_close(got, depth_aware_conv2d(x, depth, model[0].weight, model[0].bias, padding=1,
                                                       alpha=5.0))


@pytest.mark.parametrize("compile_", ["script", "trace"])
def test_torchscript_models_are_refused_with_what_to_do(compile_):
    import warnings

    from depthdistill import ConfigError
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        scripted = torch.jit.script(model) if compile_ == "script" else torch.jit.trace(model, torch.randn(1, 3, 4, 4))
    with pytest.raises(ConfigError, match=r"TorchScript .*convert_to_plain"):
        convert_to_depth_aware(scripted)
    with pytest.raises(ConfigError, match=r"submodule '1' is a TorchScript"):
        convert_to_depth_aware(nn.Sequential(nn.Conv2d(3, 3, 3), scripted))


class Gate(nn.Module):
    """A user's plain layer: a learned scale per channel."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x):
        return x * self.weight.view(-1, 1, 1)


class DepthAwareGate(DepthAwareModule, Gate):
    """Its depth-aware counterpart: the scale damped by exp(-alpha * depth)."""

    def forward(self, x):
        depth, _ = self.depth_for(x)
        return super().forward(x) * torch.exp(-self.alpha * depth)


class GateSubclass(Gate):
    pass


register_depth_aware(Gate, DepthAwareGate)


def test_user_layer_joins_through_the_mapping_and_reverts_exactly():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Gate(4), GateSubclass(4), nn.Conv2d(4, 2, 1))
    classes = {n: type(m) for n, m in model.named_modules()}
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, depth = torch.randn(2, 3, 5, 5), torch.rand(2, 1, 5, 5) + 0.5
    with torch.no_grad():
        plain_out = model(x)

    convert_to_depth_aware(model, alpha=0.7)
    assert list_depth_aware(model) == ["0", "1", "2"]
    assert type(model[1]) is DepthAwareGate and model[1].alpha == 0.7
    assert isinstance(model[2], DepthAwareGate) and isinstance(model[2], GateSubclass)
    assert type(model[2]).plain_class is GateSubclass
    assert all(p is params[n] for n, p in model.named_parameters())
    with torch.no_grad(), depth_context(depth):
        got = model(x)
        conv_out = model[0](x)
    scale = torch.exp(-0.7 * depth)
    want = model[3](conv_out * model[1].weight.view(-1, 1, 1) * scale * model[2].weight.view(-1, 1, 1) * scale)
    torch.testing.assert_close(got, want)
    copied = copy.deepcopy(model)  # the class made for the subclass pickles by its plain class
    assert type(copied[2]) is type(model[2])

    convert_to_plain(model)
    assert {n: type(m) for n, m in model.named_modules()} == classes
    assert all(p is params[n] for n, p in model.named_parameters())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not hasattr(model[1], "alpha")
    with torch.no_grad():
        assert torch.equal(model(x), plain_out)


def test_register_depth_aware_refuses_types_that_cannot_swap_in_place():
    class Other(nn.Module):
        pass

    class NotASubclass(DepthAwareModule, nn.Module):
        pass

    with pytest.raises(ConfigError, match="must derive from both"):
        register_depth_aware(Other, NotASubclass)
    with pytest.raises(ConfigError, match="already registered to DepthAwareGate"):
        register_depth_aware(Gate, type("AnotherGate", (DepthAwareModule, Gate), {}))
    with pytest.raises(ConfigError, match="nn.Module subclass"):
        register_depth_aware(int, DepthAwareGate)
    register_depth_aware(Gate, DepthAwareGate)  # the same pair again is harmless
    with pytest.raises(TypeError, match="register_depth_aware"):
        depth_aware_class(Other)


def _pool_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, stride=1, padding=1),
                         nn.Conv2d(4, 2, 3, padding=1), nn.AvgPool2d(2))


def test_pooling_is_off_by_default_and_on_when_asked_or_named():
    assert list_depth_aware(convert_to_depth_aware(_pool_net())) == ["0", "3"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), pooling=True)) == ["0", "2", "3", "4"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), pooling=True, exclude="4")) == ["0", "2", "3"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), include=["0", "2"])) == ["0", "2"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), include=iter(["0", "2"]))) == ["0", "2"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), include="*")) == ["0", "3"]  # a glob names none
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), include=["0", "2"], pooling=False)) == ["0"]
    assert list_depth_aware(convert_to_depth_aware(_pool_net(), include="2")) == ["2"]
    with pytest.raises(ConfigError, match="ceil_mode"):
        convert_to_depth_aware(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AvgPool2d(2, ceil_mode=True)), pooling=True)
    with pytest.raises(ConfigError, match="only pooling layers, left plain unless pooling=True"):
        convert_to_depth_aware(nn.Sequential(nn.AvgPool2d(3)))


def test_model_with_a_pool_round_trips():
    model = _pool_net().eval()
    classes = {n: type(m) for n, m in model.named_modules()}
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, depth = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8) * 3 + 0.5
    with torch.no_grad():
        plain_out = model(x)

    teacher = convert_to_depth_aware(model, alpha=5.0, pooling=True)
    assert [type(teacher[i]) for i in (0, 2, 3, 4)] == [DepthAwareConv2d, DepthAwareAvgPool2d] * 2
    assert teacher.state_dict().keys() == state.keys()
    with torch.no_grad():
        with depth_context(torch.full((2, 1, 8, 8), 1.5)):
            torch.testing.assert_close(teacher(x), plain_out)
        with depth_context(depth):
            got = teacher(x)
    h = teacher[1](depth_aware_conv2d(x, depth, teacher[0].weight, teacher[0].bias, padding=1, alpha=5.0))
    h = depth_aware_avg_pool2d(h, depth, 3, 1, 1, alpha=5.0)
    h = depth_aware_conv2d(h, depth, teacher[3].weight, teacher[3].bias, padding=1, alpha=5.0)
    torch.testing.assert_close(got, depth_aware_avg_pool2d(h, depth, 2, alpha=5.0))
    frozen = copy.deepcopy(teacher)
    assert list_depth_aware(frozen) == ["0", "2", "3", "4"] and frozen[2].alpha == 5.0
    # the names list_depth_aware gives convert the same layers again (checkpoints and the live teacher rely on it)
    again = convert_to_depth_aware(_pool_net(), include=list_depth_aware(teacher))
    assert list_depth_aware(again) == ["0", "2", "3", "4"]

    student = convert_to_plain(teacher)
    assert {n: type(m) for n, m in student.named_modules()} == classes
    assert all(p is params[n] for n, p in student.named_parameters())
    assert all(torch.equal(v, state[k]) for k, v in student.state_dict().items())
    with torch.no_grad():
        assert torch.equal(student(x), plain_out)


def test_deeplab_vgg16_include_with_pool5a_converts_depth_aware_cnns_seven_layers():
    from depthdistill.models import DEPTH_AWARE_CNN_LAYERS, deeplab_vgg16

    model = deeplab_vgg16(8, width=0.125)
    convert_to_depth_aware(model, include=[*DEPTH_AWARE_CNN_LAYERS, "features.31"], pooling=True)
    want = [*DEPTH_AWARE_CNN_LAYERS[:-1], "features.31", DEPTH_AWARE_CNN_LAYERS[-1]]
    assert list_depth_aware(model) == want and len(want) == 7
    assert type(model.get_submodule("features.31")) is DepthAwareAvgPool2d
