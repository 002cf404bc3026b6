import numpy as np
import pytest
import torch

from depthdistill.data import SyntheticRGBD, train_transforms
from depthdistill.data.synthetic import BOX, CEILING, CLASS_NAMES, CYLINDER, DISC, FLOOR, PANEL, SPHERE, WALL
from depthdistill.errors import ConfigError

SIZE = (48, 64)


def _world_points(scene, depth):
    """Back-projects a depth map with the pinhole model written out: X = ((u+.5-cx)/f z, (v+.5-cy)/f z, z)."""
    v, u = np.mgrid[0:scene.height, 0:scene.width]
    cam = np.stack([(u + 0.5 - scene.cx) / scene.focal * depth, (v + 0.5 - scene.cy) / scene.focal * depth, depth])
    return np.einsum("ij,jhw->ihw", scene.rotation, cam)


def _wall_plane(scene, wall):
    return [(2, scene.z_back), (0, scene.x_left), (0, scene.x_right)][wall]


def test_same_seed_split_index_gives_the_same_sample_and_others_differ():
    a = SyntheticRGBD(num_samples=3, size=SIZE, seed=5)
    b = SyntheticRGBD(num_samples=3, size=SIZE, seed=5)
    for key in ("rgb", "depth", "label"):
        assert torch.equal(a[2][key], b[2][key])
    assert not torch.equal(a[1]["depth"], a[2]["depth"])
    assert not torch.equal(a[2]["depth"], SyntheticRGBD(num_samples=3, size=SIZE, seed=6)[2]["depth"])
    assert not torch.equal(a[2]["depth"], SyntheticRGBD(num_samples=3, size=SIZE, seed=5, split="val")[2]["depth"])
    assert a[2]["id"] == "synthetic/train/2"


def test_sample_types_ranges_and_classes():
    ds = SyntheticRGBD(num_samples=12, size=SIZE, seed=1)
    seen = set()
    for sample in ds:
        assert sample["rgb"].dtype == torch.float32 and sample["rgb"].shape == (3, *SIZE)
        assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, *SIZE)
        assert sample["label"].dtype == torch.int64 and sample["label"].shape == SIZE
        assert 0 <= sample["rgb"].min() and sample["rgb"].max() <= 1
        valid = sample["depth"][sample["depth"] > 0]
        assert valid.min() >= 0.45 and valid.max() <= 10.0
        assert (sample["depth"] == 0).any(), "a sensor-like depth map has holes"
        seen |= set(sample["label"].unique().tolist())
    assert seen <= set(range(8)) | {255}
    assert {FLOOR, WALL, BOX, PANEL} <= seen
    assert ds.class_names == CLASS_NAMES and ds.palette.shape == (8, 3) and ds.palette.dtype == np.uint8


def _on_item(scene, item, points):
    """Whether each world point lies on ``item``'s surface, from the shape's own equation."""
    p = points - item.center[:, None, None]
    if item.kind == "sphere":
        return np.abs(np.linalg.norm(p, axis=0) - item.half_size[0]) < 1e-4
    if item.kind in ("panel", "disc"):
        axis, value = _wall_plane(scene, item.wall)
        flat = np.abs(points[axis] - value) < 1e-4  # a panel or disc lies at the wall's own depth
        along = p[2] if item.wall else p[0]
        if item.kind == "disc":
            return flat & (along ** 2 + p[1] ** 2 <= item.half_size[0] ** 2 + 1e-6)
        return flat & (np.abs(along) <= item.half_size[0] + 1e-6) & (np.abs(p[1]) <= item.half_size[1] + 1e-6)
    if item.kind == "cylinder":
        radial = np.hypot(p[0], p[2])
        side = (np.abs(radial - item.half_size[0]) < 1e-4) & (np.abs(p[1]) <= item.half_size[1] + 1e-6)
        cap = (np.abs(p[1] + item.half_size[1]) < 1e-4) & (radial <= item.half_size[0] + 1e-6)
        return side | cap
    c, s = np.cos(item.yaw), np.sin(item.yaw)  # box: rotate into the box frame, then on one face
    local = np.stack([c * p[0] - s * p[2], p[1], s * p[0] + c * p[2]]) / item.half_size[:, None, None]
    return np.abs(np.abs(local).max(axis=0) - 1) < 1e-3


def test_labels_and_clean_depth_agree_with_the_scene_geometry():
    ds = SyntheticRGBD(num_samples=10, size=SIZE, seed=3, sensor_noise=False)
    kinds_checked = set()
    for index in range(len(ds)):
        scene, sample = ds.scene(index), ds[index]
        depth, label = sample["depth"][0].double().numpy(), sample["label"].numpy()
        points = _world_points(scene, depth)
        valid = depth > 0
        np.testing.assert_allclose(points[1][(label == FLOOR) & valid], scene.floor_y, atol=1e-4)
        np.testing.assert_allclose(points[1][(label == CEILING) & valid], scene.ceiling_y, atol=1e-4)
        on_a_wall = np.zeros_like(valid)
        for wall in range(3):
            axis, value = _wall_plane(scene, wall)
            on_a_wall |= np.abs(points[axis] - value) < 1e-4
        assert on_a_wall[(label == WALL) & valid].all()
        for cls in (BOX, PANEL, SPHERE, DISC, CYLINDER):
            items = [item for item in scene.items if item.label == cls]
            on_some = np.zeros_like(valid)
            for item in items:
                on_some |= _on_item(scene, item, points)
                kinds_checked.add(item.kind)
            assert on_some[(label == cls) & valid].all(), (index, CLASS_NAMES[cls])
        assert ((label == 255) <= (depth == 0)).all(), "void (windows) has no depth"
    assert {"box", "sphere", "cylinder", "panel", "disc"} <= kinds_checked


def test_wall_boxes_stand_out_of_the_wall_while_panels_are_flush():
    """The depth-only distinction: a wall-mounted box is nearer than its wall, a panel is not."""
    ds = SyntheticRGBD(num_samples=30, size=SIZE, seed=0, sensor_noise=False)
    box_gaps, panel_gaps = [], []
    for index in range(len(ds)):
        scene, sample = ds.scene(index), ds[index]
        depth, label = sample["depth"][0].double().numpy(), sample["label"].numpy()
        points = _world_points(scene, depth)
        for item in scene.items:
            if item.wall < 0 or item.kind not in ("box", "panel"):
                continue
            axis, value = _wall_plane(scene, item.wall)
            along = points[2] if item.wall else points[0]
            region = ((np.abs(along - item.center[2 if item.wall else 0]) < item.half_size[2 if item.wall else 0]
                       if item.kind == "box" else np.abs(along - item.center[2 if item.wall else 0])
                       < item.half_size[0]) & (np.abs(points[1] - item.center[1]) < item.half_size[1])
                      & (label == item.label) & (depth > 0))
            gap = np.abs(points[axis][region] - value)
            (box_gaps if item.kind == "box" else panel_gaps).extend(gap.tolist())
    assert box_gaps and panel_gaps
    assert np.median(box_gaps) > 0.05
    assert max(panel_gaps) < 1e-4


def test_sensor_noise_perturbs_depth_around_the_clean_value_and_adds_holes():
    clean = SyntheticRGBD(num_samples=4, size=SIZE, seed=2, sensor_noise=False)
    noisy = SyntheticRGBD(num_samples=4, size=SIZE, seed=2)
    for index in range(4):
        c, n = clean[index]["depth"], noisy[index]["depth"]
        assert torch.equal(clean[index]["label"], noisy[index]["label"])
        both = (c > 0) & (n > 0)
        err = (n - c)[both]
        sigma = 3 * (0.0012 + 0.0019 * (c[both] - 0.4) ** 2)  # Kinect axial model at difficulty 0.5 (x2)
        assert (err.abs() <= 6 * sigma).all()
        assert err.abs().mean() > 0
        assert ((n == 0) & (c > 0)).sum() > 0


def test_fewer_classes_drop_object_kinds_and_merge_the_ceiling_into_wall():
    ds = SyntheticRGBD(num_samples=8, size=SIZE, num_classes=4, seed=0)
    assert ds.class_names == ("floor", "wall", "box", "panel") and len(ds.palette) == 4
    labels = torch.cat([ds[i]["label"].flatten() for i in range(len(ds))])
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert {SPHERE, DISC, CYLINDER} & set(labels.unique().tolist()) == set()


def test_transform_is_applied():
    ds = SyntheticRGBD(num_samples=2, size=SIZE, transform=train_transforms(crop_size=(32, 40)))
    sample = ds[0]
    assert sample["rgb"].shape == (3, 32, 40) and sample["label"].shape == (32, 40)


def test_cache_renders_each_scene_once_and_keeps_it_as_rendered(monkeypatch):
    from depthdistill.data import synthetic

    renders = []
    real_render = synthetic._render
    monkeypatch.setattr(synthetic, "_render", lambda *args: renders.append(1) or real_render(*args))
    plain = SyntheticRGBD(num_samples=3, size=SIZE, seed=2)
    cached = SyntheticRGBD(num_samples=3, size=SIZE, seed=2, cache=True)
    want = plain[1]
    cached[1]["rgb"].zero_()  # a caller (or an in-place transform) scribbling on its sample
    for _ in range(3):
        again = cached[1]
        for key in ("rgb", "depth", "label"):
            assert torch.equal(again[key], want[key])
    assert len(renders) == 2  # plain[1] once, and the cached set once for four accesses
    flips = SyntheticRGBD(num_samples=1, size=SIZE, seed=2, cache=True,
                          transform=train_transforms(SIZE, scale_range=None, color_jitter=0.0))
    seen = {flips[0]["rgb"][0, 0, 0].item() for _ in range(20)}
    assert len(seen) == 2  # the random flip still runs on every access


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(num_classes=1), dict(num_classes=9), dict(size=(8, 64)),
                                    dict(difficulty=1.5), dict(num_samples=-1)])
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        SyntheticRGBD(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticRGBD(num_samples=2, size=SIZE)[2]
