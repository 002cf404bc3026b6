"""Graph surgery over a zoo of real models (random weights): torchvision, timm and smp."""

import copy
import logging

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn as nn
import torchvision

from depthdistill import (DepthAwareConv2d, DepthError, convert_to_depth_aware, convert_to_plain, depth_context,
                          list_depth_aware)


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
    assert "alpha of 1 already depth-aware layer(s) changed to 5 (was 0: 3)" in caplog.text
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
