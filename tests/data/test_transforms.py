import pytest
import torch

from depthdistill.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    collate_rgbd,
    eval_transforms,
    resize_sample,
    train_transforms,
)
from depthdistill.errors import ConfigError


def _sample(h=6, w=8):
    """A sample whose three parts encode the pixel position, so any misalignment shows."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    index = y * w + x
    return {"rgb": torch.stack([y, x, index]).float() / (h * w), "depth": 1.0 + index[None].float(),
            "label": index.clone(), "id": "s"}


def test_resize_labels_and_depth_take_values_that_exist_and_stay_aligned():
    s = _sample()
    s["depth"][0, 0, 0] = 0.0  # a hole
    out = resize_sample(s, (13, 17))
    assert set(out["label"].unique().tolist()) <= set(s["label"].unique().tolist())
    assert set(out["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())
    # depth and label were sampled from the same source pixel everywhere
    source = out["label"]
    expected_depth = torch.where(source == 0, 0.0, 1.0 + source.float())
    assert torch.equal(out["depth"][0], expected_depth)
    assert out["label"].dtype == torch.int64


def test_resize_nearest_label_picks_the_nearest_source_pixel():
    s = _sample(2, 2)
    out = resize_sample(s, (4, 4))
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert torch.equal(out["label"], expected)


def test_bilinear_depth_ignores_holes():
    s = {"rgb": torch.zeros(3, 1, 2), "depth": torch.tensor([[[2.0, 0.0]]])}
    out = resize_sample(s, (1, 4), depth_mode="bilinear")
    # Output x=3 samples source x=1.25, clamped to the hole alone: it stays a hole; the others see the valid pixel
    # with some weight and are never pulled toward the hole's 0.
    assert out["depth"].flatten().tolist() == [2.0, 2.0, 2.0, 0.0]
    with pytest.raises(ConfigError):
        Resize(4, depth_mode="cubic")


@pytest.mark.parametrize("hole", [float("nan"), float("inf"), -1.0])
def test_bilinear_depth_treats_non_finite_and_negative_depth_as_holes(hole):
    # The package's one rule (depthdistill.nn.valid_depth): NaN and inf are holes too, not values to blend in.
    s = {"rgb": torch.zeros(3, 1, 2), "depth": torch.tensor([[[2.0, hole]]])}
    out = resize_sample(s, (1, 4), depth_mode="bilinear")
    assert out["depth"].flatten().tolist() == [2.0, 2.0, 2.0, 0.0]


def test_random_scale_range_and_alignment():
    torch.manual_seed(0)
    s = _sample(10, 10)
    sizes = {RandomScale((0.5, 2.0))(s)["rgb"].shape[-1] for _ in range(30)}
    assert min(sizes) >= 5 and max(sizes) <= 20 and len(sizes) > 3
    out = RandomScale((1.5, 1.5))(s)
    assert out["rgb"].shape[-2:] == out["label"].shape == out["depth"].shape[-2:] == (15, 15)


def test_random_crop_is_a_window_of_the_input_and_pads_with_void():
    torch.manual_seed(0)
    s = _sample(6, 8)
    out = RandomCrop((4, 5))(s)
    top, left = divmod(int(out["label"][0, 0]), 8)
    assert torch.equal(out["label"], s["label"][top:top + 4, left:left + 5])
    assert torch.equal(out["depth"], s["depth"][:, top:top + 4, left:left + 5])
    assert torch.equal(out["rgb"], s["rgb"][:, top:top + 4, left:left + 5])
    padded = RandomCrop((8, 10))(s)
    assert torch.equal(padded["label"][:6, :8], s["label"])
    assert (padded["label"][6:] == 255).all() and (padded["label"][:, 8:] == 255).all()
    assert (padded["depth"][:, 6:] == 0).all() and (padded["rgb"][:, :, 8:] == 0).all()


def test_flip_mirrors_all_three_together():
    s = _sample()
    out = RandomHorizontalFlip(p=1.0)(s)
    for key in ("rgb", "depth", "label"):
        assert torch.equal(out[key], s[key].flip(-1))
    assert RandomHorizontalFlip(p=0.0)(s) is s


def test_color_jitter_changes_rgb_only():
    torch.manual_seed(1)
    s = _sample()
    out = ColorJitter(0.5, 0.5, 0.5, 0.1)(s)
    assert not torch.equal(out["rgb"], s["rgb"])
    assert torch.equal(out["depth"], s["depth"]) and torch.equal(out["label"], s["label"])
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1


def test_normalize_uses_imagenet_statistics_by_default():
    s = {"rgb": torch.full((3, 2, 2), 0.5)}
    out = Normalize()(s)
    for c in range(3):
        assert torch.allclose(out["rgb"][c], torch.tensor((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


def test_collate_stacks_and_pads_mixed_sizes():
    a, b = _sample(2, 3), _sample(4, 2)
    batch = collate_rgbd([a, b])
    assert batch["rgb"].shape == (2, 3, 4, 3) and batch["depth"].shape == (2, 1, 4, 3)
    assert torch.equal(batch["label"][0, :2, :3], a["label"]) and (batch["label"][0, 2:] == 255).all()
    assert (batch["depth"][1, :, :, 2:] == 0).all()
    assert batch["id"] == ["s", "s"]
    same = collate_rgbd([a, a])
    assert torch.equal(same["label"], torch.stack([a["label"], a["label"]]))


def test_presets():
    torch.manual_seed(0)
    s = _sample(20, 30)
    out = train_transforms(crop_size=16)(s)
    assert out["rgb"].shape == (3, 16, 16) and out["depth"].shape == (1, 16, 16) and out["label"].shape == (16, 16)
    ev = eval_transforms()(s)
    assert torch.equal(ev["label"], s["label"]) and torch.equal(ev["depth"], s["depth"])
    assert torch.allclose(ev["rgb"], Normalize()(s)["rgb"])
    assert eval_transforms(size=(10, 15))(s)["label"].shape == (10, 15)


def _unlabelled(h=6, w=8):
    sample = _sample(h, w)
    del sample["label"]
    return sample


def test_train_transforms_keep_rgb_and_depth_aligned_on_unlabelled_samples():
    # rgb channel 2 and depth both encode the source pixel index, so any crop/flip mismatch shows.
    s = _unlabelled(20, 30)
    for seed in range(5):
        torch.manual_seed(seed)
        out = train_transforms(crop_size=(16, 16), scale_range=None, color_jitter=0.0, mean=(0, 0, 0),
                               std=(1, 1, 1))(s)
        assert sorted(out) == ["depth", "id", "rgb"] and out["depth"].shape == (1, 16, 16)
        assert torch.allclose(out["depth"][0], 1.0 + out["rgb"][2] * 600, atol=1e-3)
    assert sorted(eval_transforms(size=(10, 15))(s)) == ["depth", "id", "rgb"]


def test_train_transforms_do_to_an_unlabelled_sample_what_they_do_to_its_labelled_twin():
    # Same random draws (scale, crop, flip, jitter) whether or not a label is there.
    transform = train_transforms(crop_size=(16, 16))
    torch.manual_seed(3)
    labelled = transform(_sample(20, 30))
    torch.manual_seed(3)
    unlabelled = transform(_unlabelled(20, 30))
    assert torch.equal(unlabelled["rgb"], labelled["rgb"]) and torch.equal(unlabelled["depth"], labelled["depth"])


def test_collate_batches_unlabelled_samples_without_a_label():
    batch = collate_rgbd([_unlabelled(2, 3), _unlabelled(4, 2)])
    assert sorted(batch) == ["depth", "id", "rgb"] and batch["depth"].shape == (2, 1, 4, 3)
    assert (batch["depth"][0, :, 2:] == 0).all()


@pytest.mark.parametrize("order", ["labelled_first", "unlabelled_first"])
def test_collate_refuses_a_batch_that_mixes_labelled_and_unlabelled(order):
    from depthdistill.errors import DatasetError

    samples = [_sample(), {**_unlabelled(), "id": "u"}]
    with pytest.raises(DatasetError, match=r"mixes 1 labelled and 1 unlabelled samples \(unlabelled: \['u'\]\)"):
        collate_rgbd(samples if order == "labelled_first" else samples[::-1])
