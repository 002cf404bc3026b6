"""DeepLab-LargeFOV VGG16 (Chen et al.): structure, parameter count by hand, torchvision weight loading."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from depthdistill import ConfigError, convert_to_depth_aware, convert_to_plain, depth_context, list_depth_aware
from depthdistill.models import DeepLabVGG16, deeplab_vgg16

# torchvision.models.vgg16().features: where its 13 convolutions sit.
TV_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def _pooled(n: int) -> int:
    """Output size of a 3×3 / stride 2 / pad 1 max pool (PyTorch floor mode)."""
    return (n + 2 - 3) // 2 + 1


def test_parameter_count_at_width_1_matches_hand_computation():
    num_classes = 40
    convs = sum(cin * cout * 3 * 3 + cout for cin, cout in VGG16_CONVS)
    fc6 = 512 * 1024 * 3 * 3 + 1024
    fc7 = 1024 * 1024 + 1024
    fc8 = 1024 * num_classes + num_classes
    expected = convs + fc6 + fc7 + fc8
    model = deeplab_vgg16(num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert 20.4e6 < expected < 20.6e6  # DeepLab-LargeFOV's published "≈ 20.5 M"


def test_layers_follow_deeplab_largefov():
    model = deeplab_vgg16(7, width=0.25)
    kinds = {type(m) for m in model.modules()} - {DeepLabVGG16, nn.Sequential}
    assert kinds == {nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout}
    pool5a = model.features[31]  # after pool5, as DeepLab-LargeFOV's prototxt has it
    assert isinstance(pool5a, nn.AvgPool2d) and (pool5a.kernel_size, pool5a.stride, pool5a.padding) == (3, 1, 1)
    assert len(model.features) == 32

    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [model.features[i] for i in TV_CONV_INDICES] == convs
    for i, conv in enumerate(convs):
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        block5 = i >= 10
        assert conv.dilation == ((2, 2) if block5 else (1, 1))
        assert conv.padding == ((2, 2) if block5 else (1, 1))
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2

    fc6, relu6, drop6, fc7, relu7, drop7, fc8 = model.classifier
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == ((3, 3), (12, 12), (12, 12), 256)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 256)
    assert (fc8.kernel_size, fc8.out_channels) == ((1, 1), 7)
    assert isinstance(relu6, nn.ReLU) and isinstance(relu7, nn.ReLU)
    assert drop6.p == drop7.p == 0.5


@pytest.mark.parametrize("size", [(64, 64), (50, 37), (33, 80)])
def test_output_stride_8_and_logits_at_input_size(size):
    model = deeplab_vgg16(5, width=0.125).eval()
    seen = {}

    def record(_module, _inputs, output):
        seen["coarse"] = output.shape

    model.classifier.register_forward_hook(record)
    out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert seen["coarse"][-2:] == tuple(_pooled(_pooled(_pooled(n))) for n in size)
    if size == (64, 64):
        assert seen["coarse"][-2:] == (8, 8)


def test_logits_are_the_bilinear_upsampling_of_fc8():
    model = deeplab_vgg16(3, width=0.125).eval()
    x = torch.rand(1, 3, 40, 48)
    coarse = model.classifier(model.features(x))
    expected = nn.Upsample(size=(40, 48), mode="bilinear", align_corners=False)(coarse)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("width, first, fc", [(0.125, 8, 128), (0.5, 32, 512), (0.75, 48, 768)])
def test_width_scales_channels(width, first, fc):
    model = deeplab_vgg16(4, width=width)
    assert model.features[0].out_channels == first
    assert model.features[28].out_channels == 512 * width
    assert model.classifier[0].out_channels == fc
    assert model.features[0].in_channels == 3 and model.classifier[-1].out_channels == 4


def test_initialisation():
    model = deeplab_vgg16(3, width=0.5)
    conv = model.features[12]  # 128 -> 128 at width 0.5
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
    assert model.classifier[-1].weight.std().item() == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=2.0), dict(num_classes=True),
                                    dict(num_classes=3, width=0), dict(num_classes=3, width=-1.0),
                                    dict(num_classes=3, width="1")])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ConfigError, match="num_classes|width"):
        deeplab_vgg16(**kwargs)


def test_trains_as_depth_aware_teacher_and_reverts():
    model = deeplab_vgg16(3, width=0.125)
    params = list(model.parameters())
    convert_to_depth_aware(model)
    assert len(list_depth_aware(model)) == 14  # conv1_1 … conv5_3 and fc6; fc7/fc8 are 1×1
    depth = torch.rand(2, 1, 32, 32) + 1
    with depth_context(depth):
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    out.square().mean().backward()
    assert all(p.grad is not None for p in params)
    convert_to_plain(model)
    assert list(model.parameters()) == params
    assert {type(m) for m in model.modules()} - {DeepLabVGG16, nn.Sequential} == {
        nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout}


def test_teacher_equals_the_plain_model_under_constant_depth():
    model = deeplab_vgg16(4, width=0.125).eval()
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        plain = model(x)
        convert_to_depth_aware(model)
        with depth_context(torch.full((1, 1, 40, 40), 3.0)):
            teacher = model(x)
    torch.testing.assert_close(teacher, plain, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def torchvision_vgg16_file(tmp_path_factory):
    """A full torchvision VGG16 (random weights) saved the way torchvision's weight files are: a state_dict."""
    reference = torchvision.models.vgg16(weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    yield path, reference.features
    path.unlink()  # 540 MB: gone even when a failing test makes pytest keep its temporary folders


def test_local_torchvision_weights_land_in_matching_convs(torchvision_vgg16_file):
    path, reference = torchvision_vgg16_file
    for source in (path, str(path)):
        model = deeplab_vgg16(6, pretrained_backbone=source)
        for index in TV_CONV_INDICES:
            assert torch.equal(model.features[index].weight, reference[index].weight)
            assert torch.equal(model.features[index].bias, reference[index].bias)
    # The head is not VGG16's: it stays freshly initialised.
    assert model.classifier[0].weight.shape == (1024, 512, 3, 3)


def _features_state(**changes):
    state = torchvision.models.vgg16(weights=None).features.state_dict()
    return {f"features.{k}": v for k, v in state.items()} | changes


def test_weights_file_with_wrong_shapes_is_rejected(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(_features_state(**{"features.28.weight": torch.zeros(256, 512, 3, 3)}), path)
    with pytest.raises(ConfigError, match=r"features\.28\.weight.*\(256, 512, 3, 3\)"):
        deeplab_vgg16(3, pretrained_backbone=path)


def test_vgg16_bn_weights_are_rejected(tmp_path):
    path = tmp_path / "vgg16_bn.pth"
    state = torchvision.models.vgg16_bn(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    with pytest.raises(ConfigError, match="missing.*vgg16_bn"):
        deeplab_vgg16(3, pretrained_backbone=path)


def test_corrupt_missing_and_foreign_files_are_rejected(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(ConfigError, match="cannot read VGG16 weights"):
        deeplab_vgg16(3, pretrained_backbone=corrupt)
    with pytest.raises(ConfigError, match="does not exist"):
        deeplab_vgg16(3, pretrained_backbone=tmp_path / "absent.pth")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ConfigError, match="not a state_dict"):
        deeplab_vgg16(3, pretrained_backbone=listed)


def test_pretrained_needs_width_1_and_a_valid_source(tmp_path):
    with pytest.raises(ConfigError, match="width=1.0"):
        deeplab_vgg16(3, pretrained_backbone=tmp_path / "any.pth", width=0.5)
    with pytest.raises(ConfigError, match="pretrained_backbone must be"):
        deeplab_vgg16(3, pretrained_backbone=1)


def test_pool5a_is_a_3x3_average_of_pool5_and_can_be_left_out():
    torch.manual_seed(0)
    with_pool = deeplab_vgg16(3, width=0.125).eval()
    without = deeplab_vgg16(3, width=0.125, pool5a=False).eval()
    assert len(without.features) == 31 and not any(isinstance(m, nn.AvgPool2d) for m in without.modules())
    without.load_state_dict(with_pool.state_dict())  # no parameters: the same keys
    x = torch.rand(1, 3, 48, 40)
    pool5 = without.features(x)
    torch.testing.assert_close(with_pool.features(x), F.avg_pool2d(pool5, 3, stride=1, padding=1))
    assert not torch.allclose(with_pool(x), without(x))


def test_depth_aware_cnn_layers_are_the_first_conv_of_each_block_and_fc6():
    from depthdistill import convert_to_depth_aware, list_depth_aware
    from depthdistill.models import DEPTH_AWARE_CNN_LAYERS

    model = deeplab_vgg16(3, width=0.125)
    firsts = [f"features.{TV_CONV_INDICES[i]}" for i in (0, 2, 4, 7, 10)]  # conv1_1, conv2_1, conv3_1, conv4_1, conv5_1
    assert list(DEPTH_AWARE_CNN_LAYERS) == [*firsts, "classifier.0"]
    convert_to_depth_aware(model, include=DEPTH_AWARE_CNN_LAYERS)
    assert list_depth_aware(model) == list(DEPTH_AWARE_CNN_LAYERS)
