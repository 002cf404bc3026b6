"""NYUv2 on tiny files written in the official formats: a MATLAB v7.3 (HDF5) file with the real key names and
MATLAB's transposed axis order, and scipy-written v5 .mat files for the split and the class mappings."""

import os

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

from depthdistill.data import NYUv2
from depthdistill.data.nyuv2 import NYU13_CLASS_NAMES, NYU40_CLASS_NAMES
from depthdistill.errors import DatasetError

N, H, W = 4, 6, 9  # H != W so a transposition cannot go unnoticed
RAW_NAMES = ["wall", "floor", "chair", "lamp", "cup"]
MAP_RAW_TO_40 = np.array([1, 2, 5, 35, 40])  # raw 1..5 -> NYU40 ids (1-based)
MAP_40_TO_13 = (np.arange(40) % 13) + 1  # a made-up but complete 40 -> 13 table
SCENE_NAMES = ["kitchen_0001", "office_0002", "kitchen_0001", "bedroom_0003"]  # image k's recording


def _images():
    """Asymmetric, per-image distinct content: rgb, depth and raw labels as (N, H, W[, 3]) in reading order."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([np.stack([y * 20 + n, x * 20, np.where((y < 2) & (x < 3), 255, 0)], -1) for n in range(N)])
    depth = np.stack([0.5 + y * 0.1 + x * 0.01 + n for n in range(N)]).astype(np.float32)
    raw_depth = depth.copy()
    raw_depth[:, 0, :] = 0.0  # the sensor's holes
    labels = np.stack([(y + x + n) % 6 for n in range(N)]).astype(np.uint16)  # 0 = unlabelled, 1..5 raw classes
    return rgb.astype(np.uint8), depth, raw_depth, labels


def _write_labeled_mat(path):
    rgb, depth, raw_depth, labels = _images()
    with h5py.File(path, "w", userblock_size=512) as f:
        # MATLAB stores column-major: h5py sees images (N, 3, W, H) and maps (N, W, H).
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = depth.transpose(0, 2, 1)
        f["rawDepths"] = raw_depth.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
        refs = f.create_group("#refs#")
        names = f.create_dataset("names", (1, len(RAW_NAMES)), dtype=h5py.ref_dtype)
        for k, name in enumerate(RAW_NAMES):
            refs[f"n{k}"] = np.array([[ord(c)] for c in name], dtype=np.uint16)
            names[0, k] = refs[f"n{k}"].ref
        scenes = f.create_dataset("scenes", (N, 1), dtype=h5py.ref_dtype)
        for k, name in enumerate(SCENE_NAMES):
            refs[f"s{k}"] = np.array([[ord(c)] for c in name], dtype=np.uint16)
            scenes[k, 0] = refs[f"s{k}"].ref
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2012 HDF5 schema 1.00 .")


def _write_root(root):
    _write_labeled_mat(root / "nyu_depth_v2_labeled.mat")
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [3.0], [4.0]]), "testNdxs": np.array([[2.0]])})
    scipy.io.savemat(root / "classMapping40.mat", {"mapClass": MAP_RAW_TO_40[None].astype(float),
                                                   "className": np.array(NYU40_CLASS_NAMES, dtype=object)[None]})
    scipy.io.savemat(root / "class13Mapping.mat", {"classMapping13": {
        "labels13": MAP_40_TO_13[None].astype(float), "labelName": np.array(NYU13_CLASS_NAMES, dtype=object)[None]}})
    return root


@pytest.fixture
def root(tmp_path):
    return _write_root(tmp_path)


def test_orientation_depth_and_split_are_read_as_stored(root):
    rgb, depth, raw_depth, labels = _images()
    ds = NYUv2(root, "train")
    assert len(ds) == 3 and ds.indices.tolist() == [0, 2, 3]
    s = ds[1]  # the second train entry is image 3 (1-based)
    assert s["id"] == "nyuv2/3" and s["rgb"].shape == (3, H, W)
    np.testing.assert_allclose(s["rgb"].numpy(), rgb[2].transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert s["rgb"][2, :2, :3].min() == 1.0 and s["rgb"][2, 2:, :].max() == 0.0  # the bright corner is top-left
    np.testing.assert_allclose(s["depth"][0].numpy(), depth[2])
    assert NYUv2(root, "test")[0]["id"] == "nyuv2/2"
    raw = NYUv2(root, "train", raw_depth=True)[1]["depth"][0]
    assert (raw[0] == 0).all() and torch.allclose(raw[1:], torch.from_numpy(depth[2][1:]))


def test_label_mapping_40_13_and_894(root):
    _, _, _, labels = _images()
    raw = labels[2].astype(int)
    expected40 = np.where(raw > 0, MAP_RAW_TO_40[np.maximum(raw, 1) - 1] - 1, 255)
    expected13 = np.where(raw > 0, MAP_40_TO_13[MAP_RAW_TO_40[np.maximum(raw, 1) - 1] - 1] - 1, 255)
    expected894 = np.where(raw > 0, raw - 1, 255)
    ds40 = NYUv2(root, "train", num_classes=40)
    assert np.array_equal(ds40[1]["label"].numpy(), expected40)
    assert ds40.class_names == NYU40_CLASS_NAMES and ds40.palette.shape == (40, 3)
    ds13 = NYUv2(root, "train", num_classes=13)
    assert np.array_equal(ds13[1]["label"].numpy(), expected13) and len(ds13.class_names) == 13
    ds894 = NYUv2(root, "train", num_classes=894)
    assert np.array_equal(ds894[1]["label"].numpy(), expected894)
    assert ds894.class_names == tuple(RAW_NAMES)
    assert ds40[1]["label"].dtype == torch.int64


def test_reads_only_the_requested_slices(root, monkeypatch):
    """Lazy reading: every h5py access is one image's slice, never the whole array."""
    keys = []
    original = h5py.Dataset.__getitem__

    def recording(self, key, *args, **kwargs):
        if self.name in ("/images", "/depths", "/rawDepths", "/labels"):
            keys.append((self.name, key))
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    ds = NYUv2(root, "train")
    assert keys == []  # building the dataset reads no pixels
    ds[0]
    assert sorted(keys) == [("/depths", 0), ("/images", 0), ("/labels", 0)]


def test_dataloader_workers_each_open_their_own_handle(root):
    ds = NYUv2(root, "train")
    expected = [ds[i] for i in range(len(ds))]  # the parent opens a handle first; workers must not reuse it
    parent = os.getpid()
    ds.transform = lambda s: {**s, "pid": os.getpid(), "handle_pid": ds._h5.pid}
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert len(batches) == len(ds)
    for batch, want in zip(batches, expected, strict=True):
        assert torch.equal(batch["rgb"][0], want["rgb"]) and torch.equal(batch["label"][0], want["label"])
        assert int(batch["handle_pid"]) == int(batch["pid"]) != parent
    assert len({int(b["pid"]) for b in batches}) == 2


def test_missing_files_name_the_file_and_the_source(tmp_path, root):
    with pytest.raises(DatasetError, match=r"nyu_depth_v2_labeled\.mat.*cs\.nyu\.edu"):
        NYUv2(tmp_path / "nowhere", "train")
    (root / "splits.mat").unlink()
    with pytest.raises(DatasetError, match=r"splits\.mat.*nyuv2-meta-data"):
        NYUv2(root, "train")


def test_missing_13_class_mapping(root):
    (root / "class13Mapping.mat").unlink()
    NYUv2(root, "train", num_classes=40)  # not needed for 40 classes
    with pytest.raises(DatasetError, match=r"class13Mapping\.mat"):
        NYUv2(root, "train", num_classes=13)


def test_corrupt_files(root):
    (root / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 7.3 MAT-file" + b"\0" * 100)
    with pytest.raises(DatasetError, match="corrupt"):
        NYUv2(root, "train")


def test_corrupt_split_file(root):
    (root / "splits.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match=r"splits\.mat"):
        NYUv2(root, "train")


def test_wrong_contents(root):
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [9.0]]), "testNdxs": np.array([[2.0]])})
    with pytest.raises(DatasetError, match="image 9"):
        NYUv2(root, "train")
    scipy.io.savemat(root / "splits.mat", {"train": np.array([[1.0]])})
    with pytest.raises(DatasetError, match="trainNdxs"):
        NYUv2(root, "train")
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "r+") as f:
        del f["labels"]
        f["labels"] = np.zeros((N, H, W), np.uint16)  # not transposed: a file from somewhere else
    with pytest.raises(DatasetError, match="'labels' has shape"):
        NYUv2(root, "train")


def test_bad_arguments(root):
    with pytest.raises(DatasetError, match="split"):
        NYUv2(root, "val")
    with pytest.raises(DatasetError, match="num_classes"):
        NYUv2(root, "train", num_classes=37)


def test_prepare_command_exports_what_nyuv2_reads(root, tmp_path):
    from depthdistill.cli import main
    from depthdistill.data import RGBDFolder

    out = tmp_path / "folder"
    assert main(["prepare", "nyuv2", "--root", str(root), "--out", str(out)]) == 0
    for split in ("train", "test"):
        source, folder = NYUv2(root, split=split), RGBDFolder(out, split)
        assert len(folder) == len(source)
        for a, b in zip(source, folder):
            torch.testing.assert_close(b["rgb"], a["rgb"], atol=1 / 255, rtol=0)
            torch.testing.assert_close(b["depth"], a["depth"], atol=5e-4, rtol=0)
            assert torch.equal(b["label"], a["label"])


def test_scenes_of_a_split_come_from_the_labelled_file(root):
    assert NYUv2(root, "train").scenes() == ("bedroom_0003", "kitchen_0001")  # images 1, 3, 4
    assert NYUv2(root, "test").scenes() == ("office_0002",)
