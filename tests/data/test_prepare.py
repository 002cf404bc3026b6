import numpy as np
import pytest
import torch

from depthdistill.data import Normalize, RGBDFolder, SyntheticRGBD, export_to_folder
from depthdistill.errors import DatasetError


def test_export_then_read_back_gives_the_same_samples(tmp_path):
    source = SyntheticRGBD(num_samples=3, size=(24, 32), seed=4)
    assert export_to_folder(source, tmp_path, "val") == 3
    folder = RGBDFolder(tmp_path, "val")
    assert folder.class_names == source.class_names and len(folder) == 3
    assert folder.stems == [f"synthetic_train_{i}" for i in range(3)]
    for i in range(3):
        original, back = source[i], folder[folder.stems.index(f"synthetic_train_{i}")]
        assert torch.allclose(back["rgb"], original["rgb"], atol=0.5 / 255 + 1e-6)
        assert torch.allclose(back["depth"], original["depth"], atol=0.0005 + 1e-6)  # millimetre PNG
        assert torch.equal(back["depth"] == 0, original["depth"] == 0)
        assert torch.equal(back["label"], original["label"])
    assert not list(tmp_path.rglob(".*.tmp"))


def test_export_refuses_normalised_rgb_and_duplicate_ids(tmp_path):
    with pytest.raises(DatasetError, match="Normalize"):
        export_to_folder(SyntheticRGBD(num_samples=1, size=(16, 16), transform=Normalize()), tmp_path, "train")
    sample = SyntheticRGBD(num_samples=1, size=(16, 16))[0]
    with pytest.raises(DatasetError, match="two samples"):
        export_to_folder([sample, sample], tmp_path, "train")


def test_export_refuses_depth_beyond_16_bit(tmp_path):
    sample = SyntheticRGBD(num_samples=1, size=(16, 16))[0]
    sample["depth"] = torch.full_like(sample["depth"], 70.0)
    with pytest.raises(DatasetError, match="depth_scale"):
        export_to_folder([sample], tmp_path, "train")
    assert export_to_folder([sample], tmp_path, "train", depth_scale=100.0) == 1
    far = RGBDFolder(tmp_path, "train", depth_scale=100.0, depth_range=(0.1, 100.0))  # 70 m is beyond the default
    np.testing.assert_allclose(far[0]["depth"].numpy(), 70.0)


def test_export_of_unlabelled_data_reads_back_unlabelled(tmp_path):
    source = SyntheticRGBD(num_samples=2, size=(24, 32), split="unlabelled")
    assert export_to_folder(source, tmp_path, "unlabelled") == 2
    assert not (tmp_path / "unlabelled" / "label").exists()
    back = RGBDFolder(tmp_path, "unlabelled")
    assert not back.labelled and sorted(back[0]) == ["depth", "id", "rgb"]
    assert torch.allclose(back[1]["depth"], source[1]["depth"], atol=0.0005 + 1e-6)
    labelled = SyntheticRGBD(num_samples=1, size=(24, 32))[0]
    with pytest.raises(DatasetError, match="unlabelled but the samples before it are labelled"):
        export_to_folder([labelled, source[0]], tmp_path, "mixed")
