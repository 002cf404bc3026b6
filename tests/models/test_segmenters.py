"""smp and timm models as segmenters: image in, logits at the input size out, trainable, convertible, checked."""

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from depthdistill import ConfigError, convert_to_depth_aware, depth_context, list_depth_aware
from depthdistill.models import TimmSegmenter, smp_model


def _assert_trains(model, x, num_classes):
    """Every parameter gets a finite gradient, the first and last layers a non-zero one; small SGD steps lower the
    loss on one fixed batch (the gradient is a descent direction)."""
    label = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]), generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), label)
        loss.backward()
        if not losses:
            grads = [p.grad for p in model.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert grads[0].abs().sum() > 0 and grads[-1].abs().sum() > 0
        losses.append(loss.item())
        optimiser.step()
    assert losses[2] < losses[1] < losses[0], losses


@pytest.mark.parametrize("arch, cls", [("Unet", smp.Unet), ("deeplabv3plus", smp.DeepLabV3Plus), ("FPN", smp.FPN)])
def test_smp_model_is_smps_own_model_and_trains(arch, cls):
    torch.manual_seed(0)
    model = smp_model(arch, "resnet18", num_classes=5)
    torch.manual_seed(0)
    reference = smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=5)
    assert type(model) is cls
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model.eval()(x)
        torch.testing.assert_close(out, reference.eval()(x), rtol=0, atol=0)
    assert out.shape == (2, 5, 64, 64)
    _assert_trains(model.train(), x, 5)


def test_smp_model_passes_kwargs_and_timm_encoders():
    model = smp_model("Unet", "tu-resnet18", num_classes=2, in_channels=1, decoder_channels=(32, 16, 16, 8, 8))
    assert model.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_smp_model_becomes_a_teacher_that_equals_it_under_constant_depth():
    model = smp_model("FPN", "resnet18", num_classes=3).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        convert_to_depth_aware(model)
        assert list_depth_aware(model)
        with depth_context(torch.full((1, 1, 64, 64), 2.5)):
            teacher = model(x)
    torch.testing.assert_close(teacher, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch, encoder, match", [
    ("Unett", "resnet18", r"unknown smp architecture 'Unett'\. Did you mean 'Unet'"),
    ("Unet", "resnet81", r"unknown smp encoder 'resnet81'\. Did you mean 'resnet18'"),
    ("Unet", "tu-resnet81", r"unknown timm encoder 'resnet81'"),
    ("DPT", "resnet18", r"smp cannot build DPT.*tu-"),
])
def test_smp_model_rejects_unknown_names(arch, encoder, match):
    with pytest.raises(ConfigError, match=match):
        smp_model(arch, encoder, num_classes=3)


def test_smp_model_rejects_bad_num_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        smp_model("Unet", "resnet18", num_classes=0)


def test_timm_segmenter_is_a_head_on_timms_features_and_trains():
    import torch.nn.functional as F

    model = TimmSegmenter("resnet18", num_classes=4, head_channels=8)
    reference = timm.create_model("resnet18", features_only=True, pretrained=False)
    reference.load_state_dict(model.backbone.state_dict())
    assert [c.in_channels for c in model.lateral] == reference.feature_info.channels()
    x = torch.rand(2, 3, 45, 61)
    coarse = []
    model.classifier.register_forward_hook(lambda module, inputs, output: coarse.append(output))
    with torch.no_grad():
        model.eval()
        for got, want in zip(model.backbone(x), reference.eval()(x), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        out = model(x)
    assert coarse[0].shape[-2:] == reference(x)[0].shape[-2:]  # logits at the finest level's resolution...
    # ...brought to the input's size
    torch.testing.assert_close(out, F.interpolate(coarse[0], size=(45, 61), mode="bilinear", align_corners=False))
    assert out.shape == (2, 4, 45, 61)
    model.train()
    _assert_trains(model, x, 4)
    model.zero_grad()
    model(x).square().mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.lateral.parameters())  # every level reaches the logits


def test_timm_segmenter_out_indices_and_kwargs():
    model = TimmSegmenter("resnet18", num_classes=3, out_indices=(2, 4), head_channels=8, in_chans=4)
    assert [c.in_channels for c in model.lateral] == [128, 512]
    assert model.eval()(torch.rand(1, 4, 32, 32)).shape == (1, 3, 32, 32)


def test_timm_segmenter_becomes_a_teacher():
    model = TimmSegmenter("resnet18", num_classes=3, head_channels=8)
    convert_to_depth_aware(model)
    assert "fuse.1" in list_depth_aware(model) and "backbone.conv1" in list_depth_aware(model)
    with depth_context(torch.rand(2, 1, 64, 64) + 0.5):
        out = model(torch.rand(2, 3, 64, 64))
    out.mean().backward()
    assert model.backbone.conv1.weight.grad is not None


@pytest.mark.parametrize("kwargs, match", [
    (dict(backbone_name="resnet81", num_classes=3), r"unknown timm backbone 'resnet81'\. Did you mean 'resnet18'"),
    (dict(backbone_name="resnet18", num_classes=-1), "num_classes"),
    (dict(backbone_name="resnet18", num_classes=3, head_channels=0), "head_channels"),
    (dict(backbone_name="resnet18", num_classes=3, out_indices=(7,)), "feature extractor"),
])
def test_timm_segmenter_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TimmSegmenter(**kwargs)
