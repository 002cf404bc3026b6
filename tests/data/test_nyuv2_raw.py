"""NYUv2Raw on a fabricated scene dump in the official formats: r-*.ppm (P6), d-*.pgm (P5, 16-bit samples stored
little-endian, as the toolbox's swapbytes after imread implies), a-*.dump and INDEX.txt. Undistortion is checked
pixel by pixel against rect.m written out here, the aligned depth against project_depth_map.m written out again,
with its sequential far-to-near z-buffer loop."""

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from depthdistill.data import NYUv2Raw, collate_rgbd, is_unlabelled
from depthdistill.data.nyuv2_raw import align_depth_to_rgb, kinect_to_metres, read_kinect_pgm, undistort
from depthdistill.errors import DatasetError

H, W = 480, 640
# camera_params.m, as printed there
FX_RGB, FY_RGB = 5.1885790117450188e+02, 5.1946961112127485e+02
CX_RGB, CY_RGB = 3.2558244941119034e+02, 2.5373616633400465e+02
FX_D, FY_D = 5.8262448167737955e+02, 5.8269103270988637e+02
CX_D, CY_D = 3.1304475870804731e+02, 2.3844389626620386e+02
R_PRINTED = [9.9997798940829263e-01, 5.0518419386157446e-03, 4.3011152014118693e-03, -5.0359919480810989e-03,
             9.9998051861143999e-01, -3.6879781309514218e-03, -4.3196624923060242e-03, 3.6662365748484798e-03,
             9.9998394948385538e-01]
T_X, T_Z, T_Y = 2.5031875059141302e-02, -2.9342312935846411e-04, 6.6238747008330102e-04
KC_RGB = [2.0796615318809061e-01, -5.8613825163911781e-01, 7.2231363135888329e-04, 1.0479627195765181e-03,
          4.9856986684705107e-01]
KC_D = [-9.9897236553084481e-02, 3.9065324602765344e-01, 1.9290592870229277e-03, -1.9422022475975055e-03,
        -5.1031725053400578e-01]


def _rect_at(image, row, col, f, c, k):
    """rect.m (the toolbox's undistort) at one 0-based output pixel, with apply_distortion.m written out."""
    x, y = (col - c[0]) / f[0], (row - c[1]) / f[1]
    r2 = x * x + y * y
    cdist = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[4] * r2 ** 3
    xd = x * cdist + k[2] * 2 * x * y + k[3] * (r2 + 2 * x * x)
    yd = y * cdist + k[2] * (r2 + 2 * y * y) + k[3] * 2 * x * y
    px, py = f[0] * xd + c[0], f[1] * yd + c[1]
    x0, y0 = math.floor(px), math.floor(py)
    if not (0 <= x0 <= W - 2 and 0 <= y0 <= H - 2):
        return 255.0
    ax, ay = px - x0, py - y0
    return ((1 - ay) * (1 - ax) * image[y0, x0] + (1 - ay) * ax * image[y0, x0 + 1]
            + ay * (1 - ax) * image[y0 + 1, x0] + ay * ax * image[y0 + 1, x0 + 1])


def _matlab_round(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)  # halves away from zero


def _toolbox_projection(raw):
    """project_depth_map.m without undistortion, transliterated: 1-based pixels, MATLAB's round, its z-buffer loop."""
    noise = undistort(255.0 * (raw == 2047), "depth") > 0  # checked against rect.m below
    raw = undistort(raw, "depth")
    raw[raw < 600] = 2047
    raw[noise] = 2047
    depth = np.clip(351.3 / (1092.5 - raw), 0, 10)  # depth_rel2depth_abs.m
    # R = -[...]; reshape(R, [3 3]) fills columns, so R' has the printed numbers as rows; then R = inv(R').
    rotation = np.linalg.inv(-np.array(R_PRINTED).reshape(3, 3))
    xx, yy = np.meshgrid(np.arange(1, W + 1), np.arange(1, H + 1))
    points = np.stack([((xx - CX_D) * depth / FX_D).ravel(), ((yy - CY_D) * depth / FY_D).ravel(), depth.ravel()])
    points = rotation @ points + np.array([[T_X], [T_Z], [T_Y]])
    with np.errstate(divide="ignore", invalid="ignore"):
        x = _matlab_round(points[0] * FX_RGB / points[2] + CX_RGB)
        y = _matlab_round(points[1] * FY_RGB / points[2] + CY_RGB)
    flat = depth.ravel()
    good = np.flatnonzero((x > 0) & (x < W) & (y > 0) & (y < H) & (flat > 0))
    out = np.zeros((H, W))
    for i in good[np.argsort(-flat[good], kind="stable")]:  # far to near: the nearest is written last
        out[int(y[i]) - 1, int(x[i]) - 1] = flat[i]
    return out


def _depth_frame(background, near=None):
    raw = np.full((H, W), background, np.uint16)
    raw[:12] = 2047  # no reading
    raw[300:320, 500:540] = 550  # nearer than 0.71 m: the toolbox drops it
    if near is not None:
        raw[200:260, 300:380] = near  # a box in front of the wall
    return raw


def _write_pgm(path, raw, byteorder="<"):
    path.write_bytes(b"P5\n# kinect\n640 480\n65535\n" + raw.astype(byteorder + "u2").tobytes())


def _rgb(k):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[: H // 2, : W // 2, 0] = 200 + k  # asymmetric: red top-left
    rgb[..., 2] = np.arange(W) % 256
    return rgb


def _write_scene(folder):
    """Two RGB frames (t = 1.0, 1.1), three depth frames (0.99, 1.06, 1.12), an accelerometer dump, INDEX.txt."""
    folder.mkdir(parents=True)
    for k, t in enumerate(("1.000000", "1.100000")):
        Image.fromarray(_rgb(k)).save(folder / f"r-{t}-{100 + k}.ppm", format="PPM")
    _write_pgm(folder / "d-0.990000-200.pgm", _depth_frame(800, near=700))
    _write_pgm(folder / "d-1.060000-201.pgm", _depth_frame(900))
    _write_pgm(folder / "d-1.120000-202.pgm", _depth_frame(850), byteorder=">")  # a big-endian copy is read too
    (folder / "a-1.010000-300.dump").write_bytes(b"\x00" * 16)
    (folder / "INDEX.txt").write_text("\n".join(sorted(p.name for p in folder.iterdir())) + "\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    _write_scene(root / "kitchens_part1" / "kitchen_0001")  # folders of scenes, as some archives unpack
    _write_scene(root / "office_0002")
    return root


def test_raw_to_metres_is_the_toolbox_formula():
    raw = np.array([600, 700, 800, 1050, 1092, 2047])
    expected = [351.3 / (1092.5 - 600), 351.3 / 392.5, 351.3 / 292.5, 351.3 / 42.5, 10.0, 0.0]
    np.testing.assert_allclose(kinect_to_metres(raw), expected)


@pytest.mark.parametrize("camera", ["rgb", "depth"])
def test_undistortion_is_rect_m(camera):
    f, c, k = (((FX_RGB, FY_RGB), (CX_RGB, CY_RGB), KC_RGB) if camera == "rgb"
               else ((FX_D, FY_D), (CX_D, CY_D), KC_D))
    image = np.random.default_rng(0).uniform(0, 2047, (H, W))
    out = undistort(image, camera)
    for row in range(0, H, 37):
        for col in range(0, W, 41):
            assert out[row, col] == pytest.approx(_rect_at(image, row, col, f, c, k), rel=1e-9), (row, col)
    if camera == "rgb":  # the RGB lens's corners draw on the outside; the depth lens's draw inward
        assert out[0, 0] == 255.0 and out[H - 1, W - 1] == 255.0
    else:
        assert (out != 255.0).all()
    colour = undistort(np.stack([image, 2 * image, image], -1), camera)
    np.testing.assert_allclose(colour[..., 1], np.where(out == 255.0, 255.0, 2 * out))
    with pytest.raises(DatasetError, match="'rgb' or 'depth'"):
        undistort(image, "ir")


def test_alignment_matches_project_depth_map_written_out():
    raw = _depth_frame(800, near=700)
    aligned = align_depth_to_rgb(raw)
    expected = _toolbox_projection(raw)
    assert aligned.dtype == np.float32 and aligned.shape == (H, W)
    np.testing.assert_allclose(aligned, expected, rtol=1e-6)
    far, near = 351.3 / (1092.5 - 800), 351.3 / (1092.5 - 700)
    # the wall's and the box's depths dominate; what undistortion blends lies between them and the dropped block's
    # edge, never nearer than 0.71 m (raw 600) nor farther than the wall
    values, counts = np.unique(aligned[aligned > 0], return_counts=True)
    np.testing.assert_allclose(values[np.argsort(counts)[-2:]], [near, far], rtol=1e-6)
    assert values.min() >= 351.3 / (1092.5 - 600) - 1e-6 and values.max() <= far + 1e-6
    assert (aligned[:8] == 0).all()  # the rows without reading stay empty
    # the box, 0.89 m away, shifts further than the wall behind it: the z-buffer hides the wall there
    rows, cols = np.nonzero(np.isclose(aligned, near))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == pytest.approx((53, 71), abs=3)
    assert np.isclose(aligned[rows.min() + 5: rows.max() - 5, cols.min() + 5: cols.max() - 5], near).all()


def test_pgm_reading_both_byte_orders_and_bad_files(tmp_path):
    raw = _depth_frame(800)
    _write_pgm(tmp_path / "le.pgm", raw)
    _write_pgm(tmp_path / "be.pgm", raw, ">")
    assert np.array_equal(read_kinect_pgm(tmp_path / "le.pgm"), raw)
    assert np.array_equal(read_kinect_pgm(tmp_path / "be.pgm"), raw)
    (tmp_path / "cut.pgm").write_bytes((tmp_path / "le.pgm").read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"cut\.pgm.*truncated"):
        read_kinect_pgm(tmp_path / "cut.pgm")
    (tmp_path / "ppm.pgm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(DatasetError, match="not a binary PGM"):
        read_kinect_pgm(tmp_path / "ppm.pgm")
    _write_pgm(tmp_path / "wide.pgm", np.full((H, W), 40000, np.uint16))
    with pytest.raises(DatasetError, match="above 2047"):
        read_kinect_pgm(tmp_path / "wide.pgm")
    with pytest.raises(DatasetError, match="expected 480x640"):
        align_depth_to_rgb(np.zeros((4, 6), np.uint16))


def test_frames_pair_each_rgb_with_the_nearest_depth_and_read_as_unlabelled_samples(root):
    ds = NYUv2Raw(root)
    assert len(ds) == 4 and not ds.labelled and is_unlabelled(ds)
    scenes = [scene for scene, *_ in ds.frames]
    assert scenes == ["kitchen_0001", "kitchen_0001", "office_0002", "office_0002"]
    pairs = [(rgb.name, depth.name, round(dt, 6)) for _, rgb, depth, dt in ds.frames[:2]]
    assert pairs == [("r-1.000000-100.ppm", "d-0.990000-200.pgm", 0.01),
                     ("r-1.100000-101.ppm", "d-1.120000-202.pgm", 0.02)]
    sample = ds[1]
    assert sorted(sample) == ["depth", "id", "rgb"] and sample["id"] == "nyuv2raw/kitchen_0001/r-1.100000-101"
    assert sample["rgb"].shape == (3, H, W) and sample["depth"].shape == (1, H, W)
    rgb = np.floor(undistort(_rgb(1), "rgb") + 0.5) / 255.0  # undistorted and rounded as MATLAB's uint8
    np.testing.assert_allclose(sample["rgb"].numpy(), rgb.transpose(2, 0, 1), atol=1e-6)
    assert (sample["rgb"][:, 0, 0] == 1.0).all() and sample["rgb"][0, 100, 100] == pytest.approx(201 / 255)
    np.testing.assert_allclose(sample["depth"][0].numpy(), _toolbox_projection(_depth_frame(850)), rtol=1e-6)
    assert collate_rgbd([ds[0], ds[2]])["depth"].shape == (2, 1, H, W)


def test_scene_selection_stride_and_errors(root, tmp_path):
    assert {s for s, *_ in NYUv2Raw(root, exclude_scenes=["office_0002", "not_here"]).frames} == {"kitchen_0001"}
    assert len(NYUv2Raw(root, scenes=["office_0002"], stride=2)) == 1
    with pytest.raises(DatasetError, match="bathroom_0009.*not found"):
        NYUv2Raw(root, scenes=["bathroom_0009"])
    with pytest.raises(DatasetError, match="not found"):
        NYUv2Raw(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no scene folder"):
        NYUv2Raw(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(root / "office_0002", broken / "office_0002")
    for pgm in (broken / "office_0002").glob("d-*.pgm"):
        pgm.unlink()
    with pytest.raises(DatasetError, match="no d-\\*.pgm depth frame"):
        NYUv2Raw(broken)
    shutil.copytree(root / "office_0002", broken / "office_0003")
    cut = broken / "office_0003" / "d-0.990000-200.pgm"
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"d-0\.990000-200\.pgm.*truncated"):
        NYUv2Raw(broken, scenes=["office_0003"])[0]
