"""SUN RGB-D on a tiny tree in the official layout: bit-rotated depth PNGs, SUNRGBDMeta.mat / allsplit.mat written
with scipy (struct and cell arrays, the authors' absolute server paths) and SUNRGBD2Dseg.mat as MATLAB v7.3 HDF5
with one label-map reference per image, stored transposed."""

import os

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from depthdistill.data import SUNRGBD
from depthdistill.data.sunrgbd import SUNRGBD37_CLASS_NAMES, decode_sunrgbd_depth
from depthdistill.errors import DatasetError

SERVER = "/n/fs/sun3d/data/SUNRGBD"
# (scene folder, image name, depth name, (H, W), split)
SCENES = [
    ("kv1/NYUdata/NYU0001", "NYU0001.jpg", "NYU0001.png", (6, 8), "train"),
    ("kv2/kinect2data/000002_2014-05-26_14-23-37_260595134347_rgbf000103-resize", "0000103.jpg", "0000103.png",
     (5, 9), "test"),
    ("realsense/lg/2014_10_24-12_31_23-1311000073", "0000001.jpg", "0000001.png", (7, 6), "train"),
]


def _encode_depth(mm):
    """The release's storage: the 16-bit millimetre value rotated left by 3 bits."""
    mm = mm.astype(np.uint32)
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


def _content(k, h, w):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[: h // 2, : w // 2] = (250, 10, 10)  # top-left block red, the rest dark: an asymmetric pattern
    rgb[h // 2:, w // 2:] = (10, 10, 250)
    depth_mm = (800 + 100 * y + 10 * x + 1000 * k).astype(np.uint16)
    depth_mm[0, -1] = 9000 + k  # > 8 m, where the top three bits are set
    label = ((y * w + x + k) % 39).astype(np.uint16)  # 0 (void) .. 38: 38 is out of range, fixed below
    label[label == 38] = 37
    return rgb, depth_mm, label


def _write_tree(root):
    meta = np.zeros((1, len(SCENES)), dtype=[("rgbpath", "O"), ("depthpath", "O"), ("rgbname", "O"),
                                             ("depthname", "O"), ("sequenceName", "O")])
    with h5py.File(root / "seg.tmp", "w", userblock_size=512) as f:
        group = f.create_group("SUNRGBD2Dseg")
        refs = f.create_group("#refs#")
        seglabel = group.create_dataset("seglabel", (len(SCENES), 1), dtype=h5py.ref_dtype)
        for k, (scene, rgb_name, depth_name, (h, w), _) in enumerate(SCENES):
            rgb, depth_mm, label = _content(k, h, w)
            base = root / "SUNRGBD" / scene
            for sub in ("image", "depth", "depth_bfx"):
                (base / sub).mkdir(parents=True)
            Image.fromarray(rgb).save(base / "image" / rgb_name, quality=100, subsampling=0)
            Image.fromarray(_encode_depth(depth_mm)).save(base / "depth_bfx" / depth_name)
            raw = depth_mm.copy()
            raw[1, :] = 0
            Image.fromarray(_encode_depth(raw)).save(base / "depth" / depth_name)
            meta[0, k] = (f"{SERVER}/{scene}/image/{rgb_name}", f"{SERVER}/{scene}/depth/{depth_name}", rgb_name,
                          depth_name, f"SUNRGBD/{scene}")
            refs[f"l{k}"] = label.T  # MATLAB column-major
            seglabel[k, 0] = refs[f"l{k}"].ref
    with open(root / "seg.tmp", "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Jan  1 00:00:00 2016 HDF5 schema 1.00 .")
    metadata = root / "SUNRGBDtoolbox" / "Metadata"
    metadata.mkdir(parents=True)
    (root / "seg.tmp").rename(metadata / "SUNRGBD2Dseg.mat")
    scipy.io.savemat(metadata / "SUNRGBDMeta.mat", {"SUNRGBDMeta": meta})
    splits = root / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    splits.mkdir(parents=True)

    def cell(split):
        return np.array([f"{SERVER}/{s[0]}" + ("/" if i == 0 else "") for i, s in enumerate(SCENES) if s[4] == split],
                        dtype=object)[None]

    scipy.io.savemat(splits / "allsplit.mat", {"alltrain": cell("train"), "alltest": cell("test")})
    return root


@pytest.fixture
def root(tmp_path):
    return _write_tree(tmp_path)


def test_depth_decoding_matches_read3dpoints():
    mm = np.array([[0, 1, 1500, 8191, 8192, 9000, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(decode_sunrgbd_depth(_encode_depth(mm)), mm / 1000.0, rtol=1e-6)
    d = np.array([[12345]], dtype=np.uint16)  # the formula, written out on a stored value
    assert decode_sunrgbd_depth(d)[0, 0] == np.float32((((12345 >> 3) | (12345 << 13)) & 0xFFFF) / 1000)


def test_splits_orientation_depth_and_labels(root):
    train, test = SUNRGBD(root, "train"), SUNRGBD(root, "test")
    assert len(train) == 2 and len(test) == 1 and train.num_classes == 37
    assert train.class_names == SUNRGBD37_CLASS_NAMES and train.palette.shape == (37, 3)
    for ds, ks in ((train, (0, 2)), (test, (1,))):
        for sample, k in zip(ds, ks, strict=True):
            scene, _, _, (h, w), _ = SCENES[k]
            rgb, depth_mm, label = _content(k, h, w)
            assert sample["id"] == f"sunrgbd/{scene}"
            assert sample["rgb"].shape == (3, h, w)
            np.testing.assert_allclose(sample["rgb"].numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=0.05)  # JPEG
            assert sample["rgb"][0, 0, 0] > 0.8 and sample["rgb"][2, -1, -1] > 0.8  # red top-left, blue bottom-right
            np.testing.assert_allclose(sample["depth"][0].numpy(), depth_mm / 1000.0, rtol=1e-6)
            expected = np.where(label > 0, label.astype(int) - 1, 255)
            assert np.array_equal(sample["label"].numpy(), expected)
    raw = SUNRGBD(root, "train", raw_depth=True)[0]["depth"][0]
    assert (raw[1] == 0).all() and raw[0, 0] == pytest.approx(0.8)


def test_workers_and_collate_of_mixed_sizes(root):
    from depthdistill.data import collate_rgbd

    ds = SUNRGBD(root, "train")
    expected = [ds[i]["label"] for i in range(len(ds))]
    parent = os.getpid()
    ds.transform = lambda s: {**s, "pid": os.getpid(), "handle_pid": ds._h5.pid}
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_rgbd, multiprocessing_context="fork")
    (batch,) = list(loader)
    assert batch["rgb"].shape == (2, 3, 7, 8)
    for b, want in enumerate(expected):
        h, w = want.shape
        assert torch.equal(batch["label"][b, :h, :w], want)
    assert all(p == hp != parent for p, hp in zip(batch["pid"], batch["handle_pid"], strict=True))


def test_missing_toolbox_file_names_it_and_the_source(root):
    (root / "SUNRGBDtoolbox" / "traintestSUNRGBD" / "allsplit.mat").unlink()
    with pytest.raises(DatasetError, match=r"allsplit\.mat.*rgbd\.cs\.princeton\.edu"):
        SUNRGBD(root, "train")


def test_missing_image_names_the_file(root):
    scene, rgb_name = SCENES[2][0], SCENES[2][1]
    (root / "SUNRGBD" / scene / "image" / rgb_name).unlink()
    ds = SUNRGBD(root, "train")
    ds[0]
    with pytest.raises(DatasetError, match=rgb_name):
        ds[1]


def test_size_mismatch_names_the_files(root):
    scene, _, depth_name, (h, w), _ = SCENES[0]
    Image.fromarray(np.zeros((h + 1, w), np.uint16)).save(root / "SUNRGBD" / scene / "depth_bfx" / depth_name)
    with pytest.raises(DatasetError, match=r"size mismatch.*depth_bfx.*" + depth_name):
        SUNRGBD(root, "train")[0]


def test_corrupt_label_file_and_inconsistent_toolbox(root):
    seg = root / "SUNRGBDtoolbox" / "Metadata" / "SUNRGBD2Dseg.mat"
    good = seg.read_bytes()
    seg.write_bytes(good[:600])
    with pytest.raises(DatasetError, match="corrupt"):
        SUNRGBD(root, "train")
    seg.write_bytes(good)
    meta = scipy.io.loadmat(root / "SUNRGBDtoolbox" / "Metadata" / "SUNRGBDMeta.mat")["SUNRGBDMeta"]
    scipy.io.savemat(root / "SUNRGBDtoolbox" / "Metadata" / "SUNRGBDMeta.mat", {"SUNRGBDMeta": meta[:, :2]})
    with pytest.raises(DatasetError, match="3 label maps.*2 images"):
        SUNRGBD(root, "train")


def test_labels_false_yields_the_split_unlabelled_without_the_label_file(root):
    labelled = SUNRGBD(root, "train")
    (root / "SUNRGBDtoolbox" / "Metadata" / "SUNRGBD2Dseg.mat").unlink()
    with pytest.raises(DatasetError, match=r"SUNRGBD2Dseg\.mat"):
        SUNRGBD(root, "train")
    ds = SUNRGBD(root, "train", labels=False)
    assert not ds.labelled and len(ds) == len(labelled) == 2 and "unlabelled" in repr(ds)
    for k, sample in zip((0, 2), ds, strict=True):
        scene, _, _, (h, w), _ = SCENES[k]
        assert sorted(sample) == ["depth", "id", "rgb"] and sample["id"] == f"sunrgbd/{scene}"
        np.testing.assert_allclose(sample["depth"][0].numpy(), _content(k, h, w)[1] / 1000.0, rtol=1e-6)
    assert [s["id"] for s in SUNRGBD(root, "test", labels=False)] == [f"sunrgbd/{SCENES[1][0]}"]
