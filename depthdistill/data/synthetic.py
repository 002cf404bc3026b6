"""SyntheticRGBD: procedurally generated indoor RGB-D scenes, made on the fly, with no files.

A pinhole camera (NYUv2-like field of view) looks into a box-shaped room (floor, three walls, ceiling) that holds
objects resting on the floor (boxes, spheres, cylinders) and items on the walls (cabinets that stick out of the
wall, flat panels, flat discs, windows). Every pixel is ray-cast against the whole scene at once with numpy, the
nearest hit wins (z-buffer), and the hit gives depth (camera z in metres), the class and the surface normal. The ray
caster and renderer live in :mod:`depthdistill.data._raycast`; this module samples scenes and serves them.

Depth matters by construction: colours come from palettes *shared* across classes, so a ``box`` mounted on a
wall and a ``panel`` on the wall look alike in RGB (same palette, same textures, and a frontal box face has the
wall's normal so it is shaded like the wall) and differ only in depth (the box stands out of the wall); a
``sphere`` and a ``disc`` share a palette and a round outline. Sensor effects follow a Kinect-like model: axial
noise growing with the square of depth, holes (0) along depth edges and their shadow, at grazing angles, beyond
the range limit and in random patches.

``realistic=True`` lets RGB carry what a photo shows of that geometry: cast shadows, contact shadows and a light
placed so that the front, sides and top of a box are shaded differently.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from depthdistill.data._io import make_sample
from depthdistill.data._raycast import (
    CHECKER,
    NOISE,
    PLAIN,
    STRIPES,
    SceneItem,
    SyntheticScene,
    render,
    rotation_x,
    rotation_y,
)
from depthdistill.errors import ConfigError
from depthdistill.labels import VOID

__all__ = ["SyntheticRGBD", "SyntheticScene", "SceneItem", "CLASS_NAMES", "PALETTE", "UNLABELLED_SPLIT"]

#: Class names in id order; ``num_classes=k`` keeps the first ``k`` (``ceiling`` then counts as ``wall``).
CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "box", "panel", "sphere", "disc", "cylinder", "ceiling")

#: Display colour per class, ``(8, 3)`` uint8 (void is drawn black by convention).
PALETTE = np.array([
    [140, 100, 60],   # floor
    [170, 170, 200],  # wall
    [230, 60, 50],    # box
    [250, 200, 40],   # panel
    [60, 120, 230],   # sphere
    [60, 210, 220],   # disc
    [160, 70, 200],   # cylinder
    [235, 235, 235],  # ceiling
], dtype=np.uint8)

FLOOR, WALL, BOX, PANEL, SPHERE, DISC, CYLINDER, CEILING = range(8)
#: The split whose samples come without labels.
UNLABELLED_SPLIT = "unlabelled"
# Each split has its own seed stream: sample i of split s comes from default_rng([seed, s, i]), so no two splits share
# a scene. The unlabelled split draws scenes of the same kind and serves them without labels.
_SPLITS = {"train": 0, "val": 1, "test": 2, UNLABELLED_SPLIT: 3}

# Shared material colours (linear RGB in 0..1).
_MATERIALS = np.array([
    [0.88, 0.87, 0.84],  # 0 white
    [0.80, 0.72, 0.60],  # 1 beige
    [0.55, 0.55, 0.57],  # 2 grey
    [0.25, 0.25, 0.28],  # 3 dark
    [0.55, 0.37, 0.22],  # 4 wood
    [0.78, 0.62, 0.43],  # 5 light wood
    [0.72, 0.22, 0.18],  # 6 red
    [0.22, 0.35, 0.64],  # 7 blue
    [0.30, 0.52, 0.30],  # 8 green
    [0.86, 0.73, 0.26],  # 9 yellow
    [0.20, 0.55, 0.56],  # 10 teal
    [0.84, 0.56, 0.61],  # 11 pink
])
# Which materials a class usually takes; box/panel and sphere/disc share theirs on purpose (colour cannot tell them
# apart), and with probability ``difficulty`` any class takes any material.
_CLASS_MATERIALS = {
    FLOOR: (4, 5, 2, 1, 3),
    WALL: (0, 1, 2, 11, 5),
    CEILING: (0, 1, 2),
    BOX: (4, 5, 0, 2, 3, 6, 7, 8, 1),
    PANEL: (4, 5, 0, 2, 3, 6, 7, 8, 1),
    SPHERE: (6, 7, 8, 9, 10, 11, 0, 2),
    DISC: (6, 7, 8, 9, 10, 11, 0, 2),
    CYLINDER: (2, 3, 4, 7, 9, 10, 0, 6),
}


class SyntheticRGBD(Dataset):
    """Procedurally generated indoor RGB-D scenes in which depth tells classes apart that colour cannot.

    Each sample is rendered on the fly from ``(seed, split, index)`` alone, so the set is deterministic, needs no
    files and costs no memory; ``train``, ``val``, ``test`` and ``unlabelled`` draw from disjoint random streams.
    ``split="unlabelled"`` yields unlabelled samples (rgb, depth and id; no ``"label"`` key) of scenes drawn from
    the same distribution (the same ``size``, ``num_classes``, ``difficulty``, ``realistic``, ``sensor_noise``) but
    never one of the labelled splits' scenes; any ``num_samples`` (the first ``n`` samples are the same for every
    ``num_samples >= n``, so 1x, 3x and 10x sets are nested). Classes
    (``CLASS_NAMES``): floor, wall, box (on the floor or mounted on a wall, standing out of it), panel (flat, flush
    with the wall), sphere, disc (flat, round, on a wall), cylinder, ceiling. Box/panel and sphere/disc share
    colour palettes and textures; the depth separates them. Windows are void (255) with no depth.

    Args:
        num_samples: Number of samples (the dataset's length).
        size: Image size ``(height, width)``, each at least 16.
        num_classes: Keep the first ``num_classes`` of ``CLASS_NAMES`` (2..8); object kinds outside them are not
            placed and the ceiling is labelled ``wall`` when ``ceiling`` is not kept.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"unlabelled"`` (no labels, scenes of its own).
        seed: Base seed; the same ``(seed, split, index)`` always gives the same sample.
        difficulty: 0..1. Higher means more objects and clutter, colours drawn less by class, wall boxes that
            stick out less and mostly face the camera, stronger sensor noise and more depth holes.
        sensor_noise: Add depth noise and holes and RGB grain. ``False`` gives the exact geometry (only windows
            and surfaces beyond the sensor range have depth 0), which is what tests of the geometry want.
        transform: Joint transform applied to the sample dict (see :mod:`depthdistill.data.transforms`).
        cache: Keep every rendered sample (before ``transform``) in memory, so that epochs after the first pay
            only for the transform: rendering was about 40 % of an epoch of the demo's slim model. About 300 KB per
            96×128 sample; each DataLoader worker process keeps its own copy.
        realistic: Let RGB show the geometry as a photo would: the light sits off to one side between camera and
            back wall (so a box's front, sides and top are shaded differently), objects cast shadows (a shadow ray
            per pixel; shadowed points get only the ambient light), the ambient light darkens near where objects
            touch floor and walls (contact shadows), and boxes keep their full yaw and cabinets their full depth at
            every difficulty. Labels and depth equal the default's at ``difficulty=0`` (only the appearance
            changes); at higher difficulty the boxes differ. About 1.4-1.5x the rendering time. ``False`` (default)
            renders exactly as before.

    Attributes:
        labelled: ``False`` for ``split="unlabelled"``, else ``True``.
        class_names: Names of the kept classes, in id order.
        palette: ``(num_classes, 3)`` uint8 display colours.
        num_classes: Number of classes.

    Examples:
        >>> ds = SyntheticRGBD(num_samples=4, size=(48, 64), seed=0)
        >>> sample = ds[0]
        >>> sample["rgb"].shape, sample["depth"].shape, sample["label"].shape, sample["id"]
        (torch.Size([3, 48, 64]), torch.Size([1, 48, 64]), torch.Size([48, 64]), 'synthetic/train/0')
        >>> ds.class_names[:3]
        ('floor', 'wall', 'box')
        >>> plain = SyntheticRGBD(num_samples=4, size=(48, 64), difficulty=0.0)
        >>> lit = SyntheticRGBD(num_samples=4, size=(48, 64), difficulty=0.0, realistic=True)  # shadows and all
        >>> torch.equal(lit[0]["label"], plain[0]["label"]), torch.equal(lit[0]["rgb"], plain[0]["rgb"])
        (True, False)
        >>> sorted(SyntheticRGBD(num_samples=30, size=(48, 64), split="unlabelled")[29])  # any size: 10x a set of 3
        ['depth', 'id', 'rgb']
    """

    def __init__(self, num_samples: int = 1000, size: tuple[int, int] = (96, 128), num_classes: int = 8,
                 split: str = "train", seed: int = 0, difficulty: float = 0.5, sensor_noise: bool = True,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, cache: bool = False,
                 realistic: bool = False) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if not 2 <= num_classes <= len(CLASS_NAMES):
            raise ConfigError(f"num_classes must be 2..{len(CLASS_NAMES)} (classes: {', '.join(CLASS_NAMES)}), "
                              f"got {num_classes}")
        if len(size) != 2 or min(size) < 16:
            raise ConfigError(f"size must be (height, width) with both at least 16, got {size}")
        if not 0.0 <= difficulty <= 1.0:
            raise ConfigError(f"difficulty must be in [0, 1], got {difficulty}")
        if num_samples < 0:
            raise ConfigError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = int(num_classes)
        self.split = split
        self.labelled = split != UNLABELLED_SPLIT
        self.seed = int(seed)
        self.difficulty = float(difficulty)
        self.sensor_noise = bool(sensor_noise)
        self.transform = transform
        self.cache = bool(cache)
        self.realistic = bool(realistic)
        self._rendered: dict[int, dict[str, Any]] = {}
        self.class_names: tuple[str, ...] = CLASS_NAMES[:num_classes]
        self.palette: np.ndarray = PALETTE[:num_classes].copy()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for SyntheticRGBD of {self.num_samples} samples")
        index %= self.num_samples
        sample = self._rendered.get(index) if self.cache else None
        if sample is None:
            rng = self._rng(index)
            scene = _sample_scene(rng, *self.size, self.num_classes, self.difficulty, self.realistic)
            rgb, depth, label = render(scene, rng, self.difficulty, self.sensor_noise, self.realistic)
            sample = make_sample(rgb, depth, label if self.labelled else None, f"synthetic/{self.split}/{index}")
            if self.cache:
                self._rendered[index] = sample
        if self.cache:  # callers and transforms get their own tensors: the kept sample must stay as rendered
            sample = {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in sample.items()}
        return self.transform(sample) if self.transform is not None else sample

    def scene(self, index: int) -> SyntheticScene:
        """The scene behind sample ``index`` (camera, room, objects), for inspection and geometry checks.

        Examples:
            >>> scene = SyntheticRGBD(num_samples=1, size=(32, 32)).scene(0)
            >>> scene.floor_y > 0 > scene.ceiling_y
            True
        """
        return _sample_scene(self._rng(index % max(self.num_samples, 1)), *self.size, self.num_classes,
                             self.difficulty, self.realistic)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLITS[self.split], index])

    def __repr__(self) -> str:
        return (f"SyntheticRGBD(num_samples={self.num_samples}, size={self.size}, num_classes={self.num_classes}, "
                f"split={self.split!r}, seed={self.seed}, difficulty={self.difficulty}"
                + (", realistic=True)" if self.realistic else ")"))


# ----------------------------------------------------------------------------------------------------------------
# Scene sampling


def _material(rng: np.random.Generator, label: int, difficulty: float, avoid: int = -1) -> tuple[int, np.ndarray]:
    choices = _CLASS_MATERIALS[label] if rng.random() >= difficulty else tuple(range(len(_MATERIALS)))
    choices = tuple(m for m in choices if m != avoid) or (0,)
    index = int(choices[rng.integers(len(choices))])
    return index, np.clip(_MATERIALS[index] * rng.uniform(0.88, 1.12, 3), 0.0, 1.0)


def _texture(rng: np.random.Generator, kinds: tuple[int, ...]) -> dict[str, Any]:
    kind = int(kinds[rng.integers(len(kinds))])
    return {"texture": kind, "texture_period": float(rng.uniform(0.08, 0.5)),
            "texture_amplitude": 0.0 if kind == PLAIN else float(rng.uniform(0.12, 0.35))}


def _sample_scene(rng: np.random.Generator, height: int, width: int, num_classes: int,
                  difficulty: float, realistic: bool = False) -> SyntheticScene:
    focal = 0.8 * width  # NYUv2's Kinect: 518 px at 640 px width, a 64 degree horizontal field of view
    half_fov = math.atan(width / (2 * focal))
    cam_height = rng.uniform(1.0, 1.7)
    yaw = rng.uniform(-0.35, 0.35)
    rotation = rotation_y(yaw) @ rotation_x(rng.uniform(0.08, 0.35))
    floor_y, ceiling_y = cam_height, cam_height - rng.uniform(2.4, 3.2)
    x_left, x_right, z_back = -rng.uniform(1.6, 3.5), rng.uniform(1.6, 3.5), rng.uniform(3.5, 7.0)

    wall_material, wall_colour = _material(rng, WALL, difficulty)
    wall_texture = _texture(rng, (PLAIN, PLAIN, NOISE, STRIPES))
    ceiling_label = CEILING if num_classes > CEILING else WALL
    items: list[SceneItem] = [
        SceneItem("floor", FLOOR, np.array([0.0, floor_y, 0.0]), colour=_material(rng, FLOOR, difficulty)[1],
                  **_texture(rng, (PLAIN, CHECKER, STRIPES, NOISE))),
        SceneItem("ceiling", ceiling_label, np.array([0.0, ceiling_y, 0.0]),
                  colour=_material(rng, CEILING, difficulty)[1], **_texture(rng, (PLAIN, NOISE))),
    ]
    for wall, center in enumerate(([0.0, 0.0, z_back], [x_left, 0.0, 0.0], [x_right, 0.0, 0.0])):
        items.append(SceneItem("wall", WALL, np.array(center), wall=wall, colour=wall_colour, **wall_texture))

    def wall_point(wall: int, along: float, y: float, out: float = 0.0) -> np.ndarray:
        """A point on ``wall`` at ``along`` (x on the back wall, z on the side walls), ``out`` metres into the room."""
        if wall == 0:
            return np.array([along, y, z_back - out])
        return np.array([x_left + out, y, along]) if wall == 1 else np.array([x_right - out, y, along])

    def wall_span(wall: int, half: float) -> tuple[float, float]:
        return (x_left + half, x_right - half) if wall == 0 else (1.2 + half, z_back - half)

    # Wall items: cabinets (boxes standing out of the wall), panels, discs, and now and then a window.
    wall_kinds = [k for k in (BOX, PANEL, DISC) if k < num_classes]
    n_wall = int(rng.integers(2, 4 + round(3 * difficulty))) if wall_kinds else 0
    wall_weights = np.array([0.6, 0.2, 0.2])  # back wall is seen most, so it gets most items
    for _ in range(n_wall):
        kind = wall_kinds[int(rng.integers(len(wall_kinds)))]
        wall = int(rng.choice(3, p=wall_weights / wall_weights.sum()))
        half_w, half_h = rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.55)
        if kind == DISC:
            half_w = half_h = rng.uniform(0.15, 0.45)
        lo, hi = wall_span(wall, half_w)
        if lo >= hi:
            continue
        along = rng.uniform(lo, hi)
        y = floor_y - rng.uniform(0.5 + half_h, min(2.1, floor_y - ceiling_y - 0.1 - half_h))
        _, colour = _material(rng, kind, difficulty, avoid=wall_material)
        texture = _texture(rng, (PLAIN, STRIPES, CHECKER, NOISE))
        if kind == BOX:
            # Realistic scenes keep cabinets deep at every difficulty so that their sides and shadows show.
            out = rng.uniform(0.12, 0.5) * (1.0 if realistic else 1.0 - 0.5 * difficulty)
            half = np.array([half_w, half_h, out / 2]) if wall == 0 else np.array([out / 2, half_h, half_w])
            items.append(SceneItem("box", BOX, wall_point(wall, along, y, out / 2), half, wall=wall, colour=colour,
                                   **texture))
        else:
            items.append(SceneItem("panel" if kind == PANEL else "disc", kind, wall_point(wall, along, y),
                                   np.array([half_w, half_h, 0.0]), wall=wall, colour=colour, **texture))
    if rng.random() < 0.35:
        wall = int(rng.integers(3))
        half_w, half_h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.6)
        lo, hi = wall_span(wall, half_w)
        if lo < hi:
            y = floor_y - rng.uniform(0.9 + half_h, max(0.9 + half_h, floor_y - ceiling_y - 0.2 - half_h))
            items.append(SceneItem("window", VOID, wall_point(wall, rng.uniform(lo, hi), y),
                                   np.array([half_w, half_h, 0.0]), wall=wall))

    # Floor objects, placed where the camera sees them and apart from each other.
    floor_kinds = [k for k in (BOX, SPHERE, CYLINDER) if k < num_classes]
    n_floor = int(rng.integers(1, 3 + round(4 * difficulty))) if floor_kinds else 0
    placed: list[tuple[float, float, float]] = []
    for _ in range(n_floor):
        kind = floor_kinds[int(rng.integers(len(floor_kinds)))]
        radius = rng.uniform(0.2, 0.65)
        for _attempt in range(8):
            x, z = rng.uniform(x_left + radius, x_right - radius), rng.uniform(1.0 + radius, z_back - radius)
            in_view = abs(math.atan2(x, z) - yaw) < half_fov
            apart = all((x - px) ** 2 + (z - pz) ** 2 > (radius + pr) ** 2 for px, pz, pr in placed)
            if in_view and apart:
                break
        else:
            continue
        placed.append((x, z, radius))
        _, colour = _material(rng, kind, difficulty)
        texture = _texture(rng, (PLAIN, STRIPES, CHECKER, NOISE))
        if kind == BOX:
            half = np.array([radius * rng.uniform(0.55, 0.75), rng.uniform(0.15, 0.6),
                             radius * rng.uniform(0.55, 0.75)])
            box_yaw = rng.uniform(-1.0, 1.0) * (math.pi / 4) * (1.0 if realistic else 1.0 - 0.6 * difficulty)
            items.append(SceneItem("box", BOX, np.array([x, floor_y - half[1], z]), half, yaw=box_yaw,
                                   colour=colour, **texture))
        elif kind == SPHERE:
            r = radius * rng.uniform(0.6, 0.9)
            items.append(SceneItem("sphere", SPHERE, np.array([x, floor_y - r, z]), np.full(3, r), colour=colour,
                                   **texture))
        else:
            r, half_h = radius * rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.8)
            items.append(SceneItem("cylinder", CYLINDER, np.array([x, floor_y - half_h, z]),
                                   np.array([r, half_h, r]), colour=colour, **texture))

    if realistic:
        # Off to one side and between the camera and the back wall: the front, sides and top of a box then face the
        # light at different angles, and what stands out of the back wall casts its shadow onto the wall. The same
        # draws as below, so the rest of the sample (its sensor noise) stays the same.
        side, along = rng.uniform(-1.0, 1.0), rng.uniform(0.3, 0.65)
        half_room = (x_right - x_left) / 2 - 0.6  # the light stays 0.6 m from the walls, outside every cabinet
        light_x = (x_left + x_right) / 2 + math.copysign(0.4 + 0.6 * abs(side), side) * half_room
        light = np.array([light_x, ceiling_y + 0.25, along * z_back])
    else:
        light = np.array([rng.uniform(x_left + 0.5, x_right - 0.5), ceiling_y + 0.25,
                          rng.uniform(0.5, z_back - 0.5)])
    return SyntheticScene(height=height, width=width, focal=focal, cx=width / 2, cy=height / 2, rotation=rotation,
                          floor_y=floor_y, ceiling_y=ceiling_y, x_left=x_left, x_right=x_right, z_back=z_back,
                          light=light, ambient=float(rng.uniform(0.25, 0.45)), items=tuple(items))
