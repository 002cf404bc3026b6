"""The ray caster and renderer behind :class:`~depthdistill.data.SyntheticRGBD`: a scene description in, RGB,
depth (with Kinect-like sensor effects), labels and normals out.

Every pixel is ray-cast against the whole scene at once with numpy; the nearest hit wins (z-buffer). The scene
description (:class:`SceneItem`, :class:`SyntheticScene`) is here because both the sampler in
:mod:`depthdistill.data.synthetic` and the renderer read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from depthdistill.labels import VOID

__all__ = ["CHECKER", "NOISE", "PLAIN", "STRIPES", "SceneItem", "SyntheticScene", "render", "rotation_x",
           "rotation_y"]

#: Texture kinds of a SceneItem.
PLAIN, STRIPES, CHECKER, NOISE = range(4)

_MIN_RANGE_M = 0.45  # a structured-light sensor returns nothing closer than this


@dataclass(frozen=True)
class SceneItem:
    """One object of a synthetic scene.

    Attributes:
        kind: ``"floor"``, ``"ceiling"``, ``"wall"`` (one of the three walls), ``"box"``, ``"sphere"``,
            ``"cylinder"``, ``"panel"``, ``"disc"`` or ``"window"`` (a hole in a wall: void, no depth).
        label: Class id written to the label map (255 for windows).
        center: World position ``(x, y, z)`` in metres (y points down; for wall items the centre on the wall).
        half_size: Box half extents ``(x, y, z)`` in the box's own frame; sphere ``(r, r, r)``; cylinder
            ``(r, half height, r)``; panels and windows ``(half width, half height, 0)``; disc ``(r, r, 0)``.
        yaw: Rotation of a box about the vertical axis, radians.
        wall: For walls and wall items, which wall: 0 back (z = const), 1 left, 2 right (x = const).
        colour: Base RGB in 0..1.
        texture: 0 plain, 1 stripes, 2 checker, 3 smooth noise.
        texture_period: Period of stripes and checker, metres.
        texture_amplitude: How strongly the texture darkens the base colour (0..1).
    """

    kind: str
    label: int
    center: np.ndarray
    half_size: np.ndarray = field(default_factory=lambda: np.zeros(3))
    yaw: float = 0.0
    wall: int = -1
    colour: np.ndarray = field(default_factory=lambda: np.ones(3))
    texture: int = PLAIN
    texture_period: float = 0.3
    texture_amplitude: float = 0.0


@dataclass(frozen=True)
class SyntheticScene:
    """The geometry and appearance behind one synthetic sample (world frame: x right, y down, z forward; the
    camera sits at the origin).

    Attributes:
        height, width: Image size in pixels.
        focal: Focal length in pixels (the same for x and y).
        cx, cy: Principal point in pixels (pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)``).
        rotation: ``(3, 3)`` camera-to-world rotation; a camera ray ``((u+0.5-cx)/f, (v+0.5-cy)/f, 1)`` reaches
            the world point ``rotation @ ray * depth``.
        floor_y, ceiling_y: Heights of floor and ceiling (y is down: ``floor_y`` > 0 > ``ceiling_y``).
        x_left, x_right, z_back: Positions of the left, right and back walls.
        light: World position of the point light.
        ambient: Ambient light fraction.
        items: Room surfaces first (floor, ceiling, back, left, right wall), then wall items, then objects.
    """

    height: int
    width: int
    focal: float
    cx: float
    cy: float
    rotation: np.ndarray
    floor_y: float
    ceiling_y: float
    x_left: float
    x_right: float
    z_back: float
    light: np.ndarray
    ambient: float
    items: tuple[SceneItem, ...]


def rotation_y(angle: float) -> np.ndarray:
    """The 3×3 rotation by ``angle`` radians about the vertical (y) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> np.ndarray:
    """The 3×3 rotation by ``angle`` radians about the horizontal (x) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


# ----------------------------------------------------------------------------------------------------------------
# Rendering: every function works on all N pixels at once; ``d`` is (3, N). Camera rays start at the world origin
# (``origin=None``); shadow rays pass their own (3, N) origins.


def _camera_rays(scene: SyntheticScene) -> np.ndarray:
    v, u = np.mgrid[0:scene.height, 0:scene.width]
    rays = np.stack([(u.ravel() + 0.5 - scene.cx) / scene.focal, (v.ravel() + 0.5 - scene.cy) / scene.focal,
                     np.ones(u.size)])
    return scene.rotation @ rays  # the ray parameter t of a hit is its camera z (depth), as rays have z = 1


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise dot products of two (3, N) arrays (einsum: a strided sum over axis 0 is several times slower)."""
    return np.einsum("ij,ij->j", a, b)


def _relative_center(item: SceneItem, origin: np.ndarray | None) -> np.ndarray:
    """The item's centre seen from the ray origins: ``(3,)`` for camera rays (kept exactly as the camera-only
    renderer computed it, so default samples stay bit for bit the same), else ``(3, N)``."""
    return item.center if origin is None else item.center[:, None] - origin


def _hit_box(d: np.ndarray, item: SceneItem, origin: np.ndarray | None = None) -> np.ndarray:
    to_local = rotation_y(item.yaw).T
    start, direction = (to_local @ -_relative_center(item, origin)).reshape(3, -1), to_local @ d
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-item.half_size[:, None] - start) / direction
        t2 = (item.half_size[:, None] - start) / direction
    near, far = np.minimum(t1, t2).max(axis=0), np.maximum(t1, t2).min(axis=0)
    return np.where((near <= far) & (near > 0), near, np.inf)


def _hit_sphere(d: np.ndarray, item: SceneItem, origin: np.ndarray | None = None) -> np.ndarray:
    r, center = item.half_size[0], _relative_center(item, origin)
    a = (d * d).sum(axis=0)
    if origin is None:
        b, cc = center @ d, center @ center
    else:
        b, cc = _dot(center, d), _dot(center, center)
    disc = b * b - a * (cc - r * r)
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _hit_cylinder(d: np.ndarray, item: SceneItem, origin: np.ndarray | None = None) -> np.ndarray:
    (cx, cy, cz), (r, half_h, _) = _relative_center(item, origin), item.half_size
    top, bottom = cy - half_h, cy + half_h
    a = d[0] ** 2 + d[2] ** 2
    b = d[0] * cx + d[2] * cz
    disc = b * b - a * (cx * cx + cz * cz - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (b - np.sqrt(disc)) / a
        y = d[1] * t_side
        t_side = np.where((disc >= 0) & (t_side > 0) & (y >= top) & (y <= bottom), t_side, np.inf)
        t_cap = top / d[1]
    on_cap = (t_cap > 0) & ((d[0] * t_cap - cx) ** 2 + (d[2] * t_cap - cz) ** 2 <= r * r)
    return np.minimum(t_side, np.where(on_cap, t_cap, np.inf))


_HIT = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


def _wall_coords(points: np.ndarray, wall: int) -> np.ndarray:
    """Horizontal coordinate along a wall: x on the back wall, z on the side walls."""
    return points[0] if wall == 0 else points[2]


def _normals(item: SceneItem, points: np.ndarray) -> np.ndarray:
    """Unit normals (3, n), facing into the room / out of the object, at ``points`` on ``item``."""
    n = points.shape[1]
    if item.kind in ("floor", "ceiling"):
        return np.tile(np.array([[0.0], [-1.0 if item.kind == "floor" else 1.0], [0.0]]), n)
    if item.wall >= 0 and item.kind != "box":
        axis, sign = (2, -1.0) if item.wall == 0 else (0, 1.0 if item.wall == 1 else -1.0)
        normal = np.zeros((3, n))
        normal[axis] = sign
        return normal
    if item.kind == "sphere":
        return (points - item.center[:, None]) / item.half_size[0]
    if item.kind == "cylinder":
        radial = points - item.center[:, None]
        radial[1] = 0.0
        on_cap = np.abs(points[1] - (item.center[1] - item.half_size[1])) < 1e-6
        radial /= np.maximum(np.linalg.norm(radial, axis=0), 1e-9)
        radial[:, on_cap] = np.array([[0.0], [-1.0], [0.0]])
        return radial
    rotation = rotation_y(item.yaw)
    local = rotation.T @ (points - item.center[:, None])
    face = np.argmax(np.abs(local) / item.half_size[:, None], axis=0)
    normal = np.zeros_like(local)
    normal[face, np.arange(n)] = np.sign(local[face, np.arange(n)])
    return rotation @ normal


def _texture_pattern(item: SceneItem, points: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Texture value in 0..1 per point (0 = base colour)."""
    if item.texture == NOISE:
        return noise
    if item.kind in ("floor", "ceiling"):
        s, t = points[0], points[2]
    elif item.wall >= 0 and item.kind != "box":
        s, t = _wall_coords(points, item.wall), points[1]
    else:
        s, t = points[0] + points[2], points[1]
    p = item.texture_period
    if item.texture == STRIPES:
        return (np.sin(2 * np.pi * s / p) > 0).astype(np.float64)
    if item.texture == CHECKER:
        return ((np.floor(s / p) + np.floor(t / p)) % 2).astype(np.float64)
    return np.zeros(points.shape[1])


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise in 0..1: a coarse random grid, bilinearly upsampled to (height, width)."""
    grid = rng.random((height // cell + 2, width // cell + 2))
    y, x = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def render(scene: SyntheticScene, rng: np.random.Generator, difficulty: float, sensor_noise: bool,
            realistic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-casts ``scene``; returns rgb (H, W, 3) float in 0..1, depth (H, W) metres (0 = none), label (H, W).

    ``realistic`` adds cast shadows and contact shadows to the shading; it draws nothing from ``rng``, so depth,
    labels and the noise are those of the plain render."""
    h, w = scene.height, scene.width
    d = _camera_rays(scene)
    n = d.shape[1]
    with np.errstate(divide="ignore"):
        planes = np.stack([scene.floor_y / d[1], scene.ceiling_y / d[1], scene.z_back / d[2],
                           scene.x_left / d[0], scene.x_right / d[0]])
    planes[planes <= 0] = np.inf
    surface = np.argmin(planes, axis=0)  # index into scene.items: floor, ceiling, back, left, right wall
    zbuf = planes[surface, np.arange(n)]

    # Wall items are tested on the wall's own hit points; windows open a hole onto nothing.
    for index, item in enumerate(scene.items):
        if item.wall < 0 or item.kind == "wall" or item.kind in _HIT:
            continue
        on_wall = np.flatnonzero(surface == 2 + item.wall)
        points = d[:, on_wall] * zbuf[on_wall]
        du = _wall_coords(points, item.wall) - _wall_coords(item.center[:, None], item.wall)
        dy = points[1] - item.center[1]
        if item.kind == "disc":
            inside = du * du + dy * dy <= item.half_size[0] ** 2
        else:
            inside = (np.abs(du) <= item.half_size[0]) & (np.abs(dy) <= item.half_size[1])
        surface[on_wall[inside]] = index
        if item.kind == "window":
            zbuf[on_wall[inside]] = np.inf

    for index, item in enumerate(scene.items):
        hit = _HIT.get(item.kind)
        if hit is None:
            continue
        t = hit(d, item)
        nearer = t < zbuf
        zbuf[nearer], surface[nearer] = t[nearer], index

    labels_of = np.array([item.label for item in scene.items])
    label = labels_of[surface]
    hit_any = np.isfinite(zbuf)
    label[~hit_any] = VOID
    points = d * np.where(hit_any, zbuf, 0.0)

    noise = _smooth_noise(rng, h, w, max(2, w // 16)).ravel()
    albedo = np.zeros((3, n))
    normal = np.zeros((3, n))
    hit_pixels = np.flatnonzero(hit_any)
    by_surface = hit_pixels[np.argsort(surface[hit_pixels], kind="stable")]
    starts = np.flatnonzero(np.diff(surface[by_surface], prepend=-1))
    for mask in np.split(by_surface, starts[1:]) if hit_pixels.size else []:
        item = scene.items[surface[mask[0]]]
        pts = points[:, mask]
        normal[:, mask] = _normals(item, pts)
        pattern = _texture_pattern(item, pts, noise[mask])
        albedo[:, mask] = item.colour[:, None] * (1.0 - item.texture_amplitude * pattern)[None]

    to_light = scene.light[:, None] - points
    distance2 = (to_light * to_light).sum(axis=0)
    lambert = np.clip((normal * to_light).sum(axis=0) / np.sqrt(distance2 + 1e-12), 0.0, None)
    if realistic:
        lambert *= ~_in_shadow(scene, points, normal, to_light, lambert > 0)
        shade = scene.ambient * _contact_visibility(scene, points, surface, hit_any) \
            + 1.6 * lambert / (1.0 + 0.04 * distance2)
    else:
        shade = scene.ambient + 1.6 * lambert / (1.0 + 0.04 * distance2)
    rgb = albedo * shade[None] * (0.92 + 0.08 * noise)[None]
    sky = np.array([0.78, 0.86, 0.96])[:, None] * (1.05 - 0.25 * (np.arange(n) // w / h))[None]
    rgb[:, ~hit_any] = sky[:, ~hit_any]

    depth = np.where(hit_any, zbuf, 0.0).reshape(h, w)
    if sensor_noise:
        rgb = rgb + (0.01 + 0.02 * difficulty) * rng.standard_normal(rgb.shape, dtype=np.float32)
        cos_view = np.abs((normal * d).sum(axis=0)) / np.linalg.norm(d, axis=0)
        depth = _sensor_depth(depth, cos_view.reshape(h, w), rng, difficulty)
    depth[depth < _MIN_RANGE_M] = 0.0
    rgb = np.clip(rgb, 0.0, 1.0).reshape(3, h, w).transpose(1, 2, 0)
    return rgb, depth, label.reshape(h, w)


def _in_shadow(scene: SyntheticScene, points: np.ndarray, normal: np.ndarray, to_light: np.ndarray,
               lit: np.ndarray) -> np.ndarray:
    """Whether the segment from each point to the light is blocked by an object (box, sphere, cylinder, cabinet);
    only ``lit`` points (facing the light) are tested. The room's own surfaces cannot block: the light is inside
    the (convex) room."""
    shadowed = np.zeros(points.shape[1], dtype=bool)
    idx = np.flatnonzero(lit)
    # Start a hair off the surface so that a ray does not hit the object it leaves.
    origin = points[:, idx] + 1e-4 * normal[:, idx]
    direction = to_light[:, idx]  # t = 1 reaches the light
    length2, origin2, origin_dir = _dot(direction, direction), _dot(origin, origin), _dot(origin, direction)
    for item in scene.items:
        hit = _HIT.get(item.kind)
        if hit is None:
            continue
        # Only segments passing within the object's bounding sphere can hit it: a cheap test (|gap|^2 expanded into
        # dot products, so one matrix-vector product per object) that spares the exact one on most rays.
        center_dir = item.center @ direction - origin_dir
        to_center2 = item.center @ item.center - 2 * (item.center @ origin) + origin2
        t = np.clip(center_dir / length2, 0.0, 1.0)
        gap2 = to_center2 - 2 * t * center_dir + t * t * length2
        maybe = np.flatnonzero(gap2 <= item.half_size @ item.half_size)
        shadowed[idx[maybe]] |= hit(direction[:, maybe], item, origin[:, maybe]) < 1.0
    return shadowed


def _distance_to(item: SceneItem, points: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point (3, N) to a box, sphere or cylinder (0 inside)."""
    p = points - item.center[:, None]
    if item.kind == "sphere":
        return np.maximum(np.linalg.norm(p, axis=0) - item.half_size[0], 0.0)
    if item.kind == "cylinder":
        q = np.stack([np.hypot(p[0], p[2]) - item.half_size[0], np.abs(p[1]) - item.half_size[1]])
    else:
        q = np.abs(rotation_y(item.yaw).T @ p) - item.half_size[:, None]
    return np.linalg.norm(np.maximum(q, 0.0), axis=0)


def _contact_visibility(scene: SyntheticScene, points: np.ndarray, surface: np.ndarray,
                        hit_any: np.ndarray) -> np.ndarray:
    """Ambient visibility in (0, 1]: surfaces within reach of an object (the floor around a box's foot, the wall
    round a cabinet) see less of the indirect light. Each object takes up to 60 % right at it, falling to 0 at a
    reach of 1.2 times its smallest half extent (how far a cabinet stands out, a ball's radius): the soft dark rim
    of a real contact shadow."""
    visibility = np.ones(points.shape[1])
    hits = np.flatnonzero(hit_any)
    hit_points = points[:, hits]
    hit_points2 = _dot(hit_points, hit_points)
    for index, item in enumerate(scene.items):
        if item.kind not in _HIT:
            continue
        reach = 1.2 * float(item.half_size.min())
        # Points beyond the bounding sphere plus the reach get nothing; skip the exact distance there.
        offset2 = hit_points2 - 2 * (item.center @ hit_points) + item.center @ item.center
        bound = math.sqrt(item.half_size @ item.half_size) + reach
        near = np.flatnonzero((offset2 < bound * bound) & (surface[hits] != index))
        falloff = np.clip(1.0 - _distance_to(item, hit_points[:, near]) / reach, 0.0, 1.0)
        visibility[hits[near]] *= 1.0 - 0.6 * falloff ** 2
    return visibility


def _sensor_depth(depth: np.ndarray, cos_view: np.ndarray, rng: np.random.Generator,
                  difficulty: float) -> np.ndarray:
    """Kinect-like depth: axial noise (Nguyen et al. 2012: 1.2 mm + 1.9 mm (z - 0.4)^2), a shadow of holes on
    the far side of depth edges, dropouts at grazing angles, beyond the range limit and in random patches."""
    h, w = depth.shape
    valid = depth > 0
    sigma = (0.0012 + 0.0019 * (depth - 0.4) ** 2) * (1.0 + 2.0 * difficulty)
    noisy = depth + rng.standard_normal(depth.shape, dtype=np.float32) * sigma

    holes = ~valid
    # Depth edges: the farther pixel of a jump loses its depth, and the projector's shadow widens that to the left.
    jump = np.zeros_like(valid)
    step = depth[:, 1:] - depth[:, :-1]
    far_left = valid[:, :-1] & valid[:, 1:] & (step < -0.06 * depth[:, 1:])
    jump[:, :-1] |= far_left
    jump[:, 1:] |= valid[:, 1:] & valid[:, :-1] & (step > 0.06 * depth[:, :-1])
    vstep = np.abs(depth[1:] - depth[:-1]) > 0.06 * np.minimum(depth[1:], depth[:-1])
    jump[1:] |= vstep & (depth[1:] > depth[:-1])
    jump[:-1] |= vstep & (depth[:-1] > depth[1:])
    shadow = far_left.copy()
    for _ in range(int(rng.integers(0, 2 + round(2 * difficulty)))):
        shadow[:, :-1] |= shadow[:, 1:]
    holes[:, :-1] |= shadow
    holes |= jump & (rng.random(depth.shape) < 0.5 + 0.4 * difficulty)
    holes |= (cos_view < 0.2) & (rng.random(depth.shape) < 0.7)
    holes |= depth > rng.uniform(8.0, 10.0) - 2.0 * difficulty
    patches = _smooth_noise(rng, h, w, max(2, w // 12))
    holes |= patches > 0.97 - 0.07 * difficulty
    noisy[holes] = 0.0
    return noisy
