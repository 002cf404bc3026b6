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
    real_render = synthetic.render
    monkeypatch.setattr(synthetic, "render", lambda *args: renders.append(1) or real_render(*args))
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


# ----------------------------------------------------------------------------------------------------------------
# realistic=True: shading cues from geometry (light placement, cast shadows, contact shadows)


def test_realistic_false_is_the_default_render_and_shows_in_repr():
    default = SyntheticRGBD(num_samples=3, size=SIZE, seed=4, difficulty=0.7)
    explicit = SyntheticRGBD(num_samples=3, size=SIZE, seed=4, difficulty=0.7, realistic=False)
    for index in range(3):
        for key in ("rgb", "depth", "label"):
            assert torch.equal(default[index][key], explicit[index][key])
    assert "realistic" not in repr(default)
    assert repr(SyntheticRGBD(num_samples=3, size=SIZE, realistic=True)).endswith(", realistic=True)")


@pytest.mark.parametrize("sensor_noise", [True, False])
def test_realistic_changes_only_the_appearance_at_difficulty_zero(sensor_noise):
    plain = SyntheticRGBD(num_samples=4, size=SIZE, seed=1, difficulty=0.0, sensor_noise=sensor_noise)
    lit = SyntheticRGBD(num_samples=4, size=SIZE, seed=1, difficulty=0.0, sensor_noise=sensor_noise, realistic=True)
    for index in range(4):
        a, b = plain[index], lit[index]
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["depth"], b["depth"])
        assert (a["rgb"] - b["rgb"]).abs().mean() > 0.01


def test_realistic_boxes_keep_full_yaw_and_depth_and_the_light_sits_off_centre():
    kwargs = dict(num_samples=12, size=SIZE, seed=0, difficulty=1.0)
    plain, lit = SyntheticRGBD(**kwargs), SyntheticRGBD(**kwargs, realistic=True)
    yaws = 0
    for index in range(12):
        a, b = plain.scene(index), lit.scene(index)
        assert [item.kind for item in a.items] == [item.kind for item in b.items]
        for p, q in zip(a.items, b.items):
            if p.kind == "box" and p.wall < 0:  # the same draw, without the (1 - 0.6 difficulty) shrink
                assert q.yaw == pytest.approx(p.yaw / 0.4)
                yaws += 1
            if p.kind == "box" and p.wall >= 0:  # cabinets: depth without the (1 - 0.5 difficulty) shrink
                axis = 2 if p.wall == 0 else 0  # the wall's normal
                assert q.half_size[axis] == pytest.approx(2 * p.half_size[axis])
        half_room = (b.x_right - b.x_left) / 2 - 0.6
        offset = abs(b.light[0] - (b.x_left + b.x_right) / 2)
        assert 0.4 * half_room - 1e-9 <= offset <= half_room + 1e-9
        assert 0.3 * b.z_back <= b.light[2] <= 0.65 * b.z_back
    assert yaws > 0


def _room(items, light, ambient=0.3, size=(48, 64)):
    from depthdistill.data.synthetic import SceneItem, SyntheticScene

    h, w = size
    floor_y, ceiling_y, x_left, x_right, z_back = 1.5, -1.2, -2.5, 2.5, 6.0
    grey = np.full(3, 0.3)  # dark enough that no shade clips at 1
    room = [SceneItem("floor", FLOOR, np.array([0.0, floor_y, 0.0]), colour=grey),
            SceneItem("ceiling", CEILING, np.array([0.0, ceiling_y, 0.0]), colour=grey)]
    room += [SceneItem("wall", WALL, np.array(c), wall=i, colour=grey)
             for i, c in enumerate(([0.0, 0.0, z_back], [x_left, 0.0, 0.0], [x_right, 0.0, 0.0]))]
    return SyntheticScene(height=h, width=w, focal=0.8 * w, cx=w / 2, cy=h / 2, rotation=np.eye(3), floor_y=floor_y,
                          ceiling_y=ceiling_y, x_left=x_left, x_right=x_right, z_back=z_back,
                          light=np.asarray(light, dtype=float), ambient=ambient, items=tuple(room + list(items)))


def _draw(scene, realistic):
    from depthdistill.data._raycast import render

    return render(scene, np.random.default_rng(0), 0.0, False, realistic)


@pytest.mark.parametrize("kind, label", [("box", BOX), ("sphere", SPHERE), ("cylinder", CYLINDER)])
def test_an_object_between_light_and_floor_casts_a_shadow_of_exactly_the_ambient_shade(kind, label):
    from depthdistill.data.synthetic import SceneItem

    light = np.array([-1.5, -1.0, 2.0])
    bare = _room([], light)
    u, v = 50, 40  # a floor pixel, lower right
    ray = np.array([(u + 0.5 - bare.cx) / bare.focal, (v + 0.5 - bare.cy) / bare.focal, 1.0])
    point = ray * bare.floor_y / ray[1]
    # The object halfway along the segment to the light, 1 m above the floor: out of the camera's view of the point
    # and beyond the reach of its contact shadow.
    box = SceneItem(kind, label, point + 0.5 * (light - point), np.full(3, 0.2), colour=np.full(3, 0.5))
    shadowed = _room([box], light)
    rgb_bare, _, label_bare = _draw(bare, True)
    rgb_box, _, label_box = _draw(shadowed, True)
    assert label_bare[v, u] == label_box[v, u] == FLOOR
    to_light = light - point
    lambert = -to_light[1] / np.linalg.norm(to_light)  # the floor's normal is -y
    direct = 1.6 * lambert / (1 + 0.04 * to_light @ to_light)
    np.testing.assert_allclose(rgb_box[v, u] / rgb_bare[v, u], bare.ambient / (bare.ambient + direct), rtol=1e-9)
    assert (rgb_box[v, u] < 0.8 * rgb_bare[v, u]).all()
    assert np.array_equal(_draw(shadowed, False)[0][v, u], _draw(bare, False)[0][v, u])  # no shadows by default


def test_a_box_shows_three_differently_lit_faces_and_darkens_the_floor_at_its_foot():
    from depthdistill.data.synthetic import SceneItem

    half = np.array([0.35, 0.3, 0.35])
    center = np.array([1.6, 1.5 - half[1], 4.5])  # right of the camera: front, left side, top and foot in view
    box = SceneItem("box", BOX, center, half, colour=np.full(3, 0.5))
    scene = _room([box], light=[-2.0, -1.1, 3.5], size=(64, 96))
    rgb, depth, label = _draw(scene, True)
    points = _world_points(scene, depth)
    brightness = rgb.mean(axis=2)
    on_box = label == BOX
    faces = {"front": np.abs(points[2] - (center[2] - half[2])) < 1e-6,
             "left": np.abs(points[0] - (center[0] - half[0])) < 1e-6,
             "top": np.abs(points[1] - (center[1] - half[1])) < 1e-6}
    means = {}
    for name, face in faces.items():
        assert (face & on_box).sum() >= 4, name
        means[name] = brightness[face & on_box].mean()
    values = sorted(means.values())
    assert values[1] > 1.15 * values[0] and values[2] > 1.15 * values[1], means
    # Contact shadow: the floor just beside the box's foot is darker than with no box there at all.
    bare_rgb = _draw(_room([], light=scene.light, size=(64, 96)), True)[0].mean(axis=2)
    foot = (label == FLOOR) & (np.abs(points[1] - scene.floor_y) < 1e-6) \
        & (np.abs(points[2] - (center[2] - half[2] - 0.1)) < 0.1) & (np.abs(points[0] - center[0]) < half[0])
    assert foot.sum() >= 3 and (brightness[foot] < bare_rgb[foot]).all()
    assert (brightness[foot] / bare_rgb[foot]).mean() < 0.97


def test_realistic_samples_cache_like_the_rest():
    plain = SyntheticRGBD(num_samples=2, size=SIZE, seed=2, realistic=True)
    cached = SyntheticRGBD(num_samples=2, size=SIZE, seed=2, realistic=True, cache=True)
    for _ in range(2):
        assert torch.equal(cached[1]["rgb"], plain[1]["rgb"])


def _scene_key(scene):
    """The continuous draws that make a scene; two scenes from different random streams never share them."""
    return (round(scene.floor_y, 12), round(scene.z_back, 12), round(scene.x_left, 12), round(scene.x_right, 12))


def test_unlabelled_split_has_no_labels_and_scenes_of_its_own():
    n = 60
    unlabelled = SyntheticRGBD(num_samples=n, size=(16, 16), split="unlabelled", seed=0)
    assert not unlabelled.labelled and SyntheticRGBD(num_samples=1, size=(16, 16)).labelled
    keys = {_scene_key(unlabelled.scene(i)) for i in range(n)}
    assert len(keys) == n
    for split in ("train", "val", "test"):
        labelled = SyntheticRGBD(num_samples=n, size=(16, 16), split=split, seed=0)
        assert not keys & {_scene_key(labelled.scene(i)) for i in range(n)}, split
    # another seed's labelled scenes are other scenes too
    other = SyntheticRGBD(num_samples=n, size=(16, 16), split="train", seed=3)
    assert not keys & {_scene_key(other.scene(i)) for i in range(n)}


def test_unlabelled_samples_follow_the_labelled_settings_and_nest():
    kwargs = {"size": SIZE, "difficulty": 0.0, "seed": 4}
    small = SyntheticRGBD(num_samples=2, split="unlabelled", **kwargs)
    large = SyntheticRGBD(num_samples=20, split="unlabelled", cache=True, **kwargs)
    sample = small[1]
    assert sorted(sample) == ["depth", "id", "rgb"] and sample["id"] == "synthetic/unlabelled/1"
    assert sample["rgb"].shape == (3, *SIZE) and sample["depth"].shape == (1, *SIZE)
    valid = sample["depth"][sample["depth"] > 0]
    assert valid.min() >= 0.45 and valid.max() <= 10.0  # metres, like the labelled splits
    assert torch.equal(large[1]["rgb"], sample["rgb"]) and torch.equal(large[1]["depth"], sample["depth"])
    # `realistic` changes the unlabelled RGB as it does the labelled one (depth unchanged at difficulty 0)
    lit = SyntheticRGBD(num_samples=2, split="unlabelled", realistic=True, **kwargs)[1]
    assert torch.equal(lit["depth"], sample["depth"]) and not torch.equal(lit["rgb"], sample["rgb"])
    # a train transform applies to unlabelled samples
    cropped = SyntheticRGBD(num_samples=1, split="unlabelled", transform=train_transforms(crop_size=(32, 32)),
                            **kwargs)[0]
    assert cropped["rgb"].shape == (3, 32, 32) and "label" not in cropped
