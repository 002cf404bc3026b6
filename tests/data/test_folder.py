import numpy as np
import pytest
from PIL import Image

from depthdistill.data import RGBDFolder
from depthdistill.errors import DatasetError

H, W = 5, 7


def _write(root, stem="a", split="train", depth_ext=".png", rgb_ext=".png", depth=None, label=None, rgb=None):
    for sub in ("rgb", "depth", "label"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    rgb = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3) if rgb is None else rgb
    Image.fromarray(rgb).save(root / split / "rgb" / f"{stem}{rgb_ext}", quality=100)
    depth = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 100 if depth is None else depth
    if depth_ext == ".npy":
        np.save(root / split / "depth" / f"{stem}.npy", depth)
    else:
        Image.fromarray(depth).save(root / split / "depth" / f"{stem}{depth_ext}")
    label = (np.arange(H * W) % 4).astype(np.uint8).reshape(H, W) if label is None else label
    label[0, 0] = 255
    Image.fromarray(label).save(root / split / "label" / f"{stem}.png")


def test_reads_rgb_depth_mm_and_labels_aligned(tmp_path):
    _write(tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    ds = RGBDFolder(tmp_path, "train")
    s = ds[0]
    assert len(ds) == 1 and s["id"] == "a" and ds.class_names == ("a", "b", "c", "d") and ds.num_classes == 4
    expected_rgb = np.arange(H * W * 3).reshape(H, W, 3).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(s["rgb"].numpy(), expected_rgb, atol=1e-6)
    np.testing.assert_allclose(s["depth"][0].numpy(), np.arange(H * W).reshape(H, W) * 0.1, rtol=1e-6)
    assert int(s["label"][0, 0]) == 255 and int(s["label"][0, 1]) == 1 and int(s["label"][1, 0]) == W % 4


def test_depth_scale_and_float_depth_formats(tmp_path):
    metres = np.linspace(0.5, 4.0, H * W, dtype=np.float32).reshape(H, W)
    metres[2, 3] = np.nan
    _write(tmp_path, "f", depth_ext=".npy", depth=metres)
    _write(tmp_path, "t", depth_ext=".tiff", depth=metres)
    _write(tmp_path, "i", depth_ext=".npy", depth=np.full((H, W), 250, np.int32))
    ds = RGBDFolder(tmp_path, "train", depth_scale=100.0)
    assert ds.stems == ["f", "i", "t"]
    for index in (0, 2):
        d = ds[index]["depth"][0].numpy()
        assert d[2, 3] == 0.0  # non-finite is missing
        mask = np.ones_like(d, bool)
        mask[2, 3] = False
        np.testing.assert_allclose(d[mask], metres[mask], rtol=1e-6)  # float depth is metres, not scaled
    np.testing.assert_allclose(ds[1]["depth"].numpy(), 2.5)  # integer depth / depth_scale


def test_missing_partner_names_the_file(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    (tmp_path / "train" / "depth" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.png"):
        RGBDFolder(tmp_path, "train")


def test_orphan_label_and_missing_folders(tmp_path):
    _write(tmp_path, "a")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "train" / "label" / "z.png")
    with pytest.raises(DatasetError, match=r"z\.png"):
        RGBDFolder(tmp_path, "train")
    with pytest.raises(DatasetError, match="val"):
        RGBDFolder(tmp_path, "val")


def test_size_mismatch_names_the_files(tmp_path):
    _write(tmp_path, "a", label=np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch.*a\.png"):
        RGBDFolder(tmp_path, "train")[0]


def test_corrupt_file_names_the_file(tmp_path):
    _write(tmp_path, "a")
    (tmp_path / "train" / "depth" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"depth.a\.png"):
        RGBDFolder(tmp_path, "train")[0]


def test_duplicate_stems_are_rejected(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "a", rgb_ext=".jpg")
    with pytest.raises(DatasetError, match="stem 'a'"):
        RGBDFolder(tmp_path, "train")


def test_eight_bit_depth_png_is_refused(tmp_path):
    from depthdistill.errors import DepthError
    _write(tmp_path, depth=np.full((H, W), 120, np.uint8))  # read as 0.12 m before: plausible, and wrong
    with pytest.raises(DepthError, match=r"a\.png: depth is 8-bit .*16-bit PNG in millimetres"):
        RGBDFolder(tmp_path, "train")[0]


def test_float_depth_in_millimetres_is_refused_with_the_fix(tmp_path):
    from depthdistill.errors import DepthError
    mm = np.linspace(800, 4000, H * W, dtype=np.float32).reshape(H, W)
    _write(tmp_path, "mm", depth_ext=".npy", depth=mm)
    with pytest.raises(DepthError, match=r"mm\.npy: median valid depth is 2400 .*millimetres.*depth / 1000"):
        RGBDFolder(tmp_path, "train")[0]
    # the same file is accepted when the plausible range says so (e.g. a scene that really is far away)
    far = RGBDFolder(tmp_path, "train", depth_range=(0.1, 5000.0))[0]["depth"]
    np.testing.assert_allclose(far[0].numpy(), mm)
    # and integer millimetres read with a wrong depth_scale are caught too
    _write(tmp_path / "int", "i", depth=(mm * 1).astype(np.uint16))
    with pytest.raises(DepthError, match="millimetres"):
        RGBDFolder(tmp_path / "int", "train", depth_scale=1.0)[0]


def test_split_without_label_folder_yields_unlabelled_samples(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    labelled = RGBDFolder(tmp_path, "train")
    assert labelled.labelled
    import shutil
    shutil.rmtree(tmp_path / "train" / "label")
    ds = RGBDFolder(tmp_path, "train")
    assert not ds.labelled and len(ds) == 2 and "unlabelled" in repr(ds)
    s = ds[1]
    assert sorted(s) == ["depth", "id", "rgb"] and s["id"] == "b"
    np.testing.assert_allclose(s["depth"][0].numpy(), np.arange(H * W).reshape(H, W) * 0.1, rtol=1e-6)
    with pytest.raises(DatasetError, match=r"folder not found: .*label"):
        RGBDFolder(tmp_path, "train", labels=True)


def test_labels_false_ignores_the_label_folder_and_still_checks_rgb_depth(tmp_path):
    _write(tmp_path, "a")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "train" / "label" / "orphan.png")
    with pytest.raises(DatasetError, match="orphan"):
        RGBDFolder(tmp_path, "train")
    ds = RGBDFolder(tmp_path, "train", labels=False)
    assert sorted(ds[0]) == ["depth", "id", "rgb"]
    _write(tmp_path, "c", depth=np.ones((H + 1, W), np.uint16) * 1000)
    with pytest.raises(DatasetError, match=r"size mismatch.*c\.png"):
        RGBDFolder(tmp_path, "train", labels=False)[1]
    (tmp_path / "train" / "depth" / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"c\.png"):
        RGBDFolder(tmp_path, "train", labels=False)
