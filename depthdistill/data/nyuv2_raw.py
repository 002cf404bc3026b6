"""NYUv2Raw: unlabelled RGB-D frames from NYU Depth V2's raw scene dumps, depth aligned to RGB as the toolbox does.

The 1449 labelled frames of :class:`~depthdistill.data.NYUv2` were picked from the raw Kinect recordings (the
official "raw" download, hundreds of thousands of frames): one folder per scene, e.g. ``bedroom_0001/``, holding

* ``r-<timestamp>-<n>.ppm``: RGB frames, 640×480, 8-bit (PPM P6);
* ``d-<timestamp>-<n>.pgm``: raw Kinect depth frames, 640×480, 16-bit PGM (P5) holding 11-bit disparity-like
  values (2047 = no reading); the toolbox byte-swaps them after ``imread`` (``swapbytes``), i.e. the samples are
  stored little-endian although PGM prescribes big-endian (see :func:`read_kinect_pgm`);
* ``a-<timestamp>-<n>.dump``: accelerometer records (not used), and ``INDEX.txt`` (not needed: the toolbox lists the
  folder instead).

What the official MATLAB toolbox does, and this module after it:

* ``get_synched_frames.m`` pairs frames by their timestamps (the number after ``r-``/``d-``). It keeps every *depth*
  frame and finds the nearest RGB frame; here every *RGB* frame is kept and paired with the nearest-in-time depth
  frame, so no image appears twice.
* ``depth_rel2depth_abs.m``: metres = 351.3 / (1092.5 − raw), above 10 m set to 10 m, below 0 set to 0 (missing).
* ``project_depth_map.m`` with ``camera_params.m``:

  1. lens distortion is removed from the RGB image and from the raw depth frame by ``undistort`` (Bouguet's
     ``rect.m``): each output pixel looks up where the distortion model (radial k1, k2, k3 and tangential p1, p2)
     sends it in the input and interpolates bilinearly; lookups outside the image give 255 (white RGB). The same is
     done to a mask of the holes, and every depth pixel that drew on a hole or on the outside is no reading; so
     are raw values below 600 (nearer than 0.71 m);
  2. every depth pixel is unprojected with the depth camera's intrinsics (1-based pixel coordinates, as MATLAB's
     ``meshgrid(1:W, 1:H)``), moved into the RGB camera with the calibration's ``R`` and ``T = [t_x, t_z, t_y]``
     (sic), projected with the RGB intrinsics, rounded, kept when ``0 < x < W`` and ``0 < y < H`` (1-based), and
     z-buffered: where several points land on one pixel the nearest wins. The value written is the point's depth
     in the depth camera, as the toolbox writes it.

One difference: the toolbox marks the frame's *largest* raw value as no reading (``imgDepth == max(imgDepth(:))``),
meant for 2047; in a frame without any 2047 that would drop its farthest valid pixels, so here only 2047 means no
reading. The aligned depth is 480×640 like the labelled set's ``rawDepths`` (holes = 0, no in-painting), and the
RGB is the undistorted image, as the toolbox returns it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from depthdistill.data._io import make_sample, read_image
from depthdistill.errors import DatasetError

__all__ = ["NYUv2Raw", "NYU_KINECT", "read_kinect_pgm", "kinect_to_metres", "undistort", "align_depth_to_rgb"]

_SOURCE = ("NYU Depth V2 raw scene dumps: https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html (\"Raw\" downloads, "
           "one folder per scene with r-*.ppm, d-*.pgm and a-*.dump files)")
_HEIGHT, _WIDTH = 480, 640
_NO_READING = 2047  # the Kinect's 11-bit "no depth" value
_FRAME = re.compile(r"^([rd])-(\d+(?:\.\d*)?)-[^/]*\.(ppm|pgm)$")
_PGM_FIELD = re.compile(rb"(?:\s|#[^\n]*\n)*(\d+)")  # whitespace and comments, then one header number

#: The toolbox's ``camera_params.m``: intrinsics of both cameras (pixels, 640×480), the depth→RGB extrinsics
#: (``R``, and ``T`` in the toolbox's ``[t_x, t_z, t_y]`` order, metres) and the raw→metres constants.
NYU_KINECT: dict[str, Any] = {
    "fx_rgb": 5.1885790117450188e+02, "fy_rgb": 5.1946961112127485e+02,
    "cx_rgb": 3.2558244941119034e+02, "cy_rgb": 2.5373616633400465e+02,
    "fx_d": 5.8262448167737955e+02, "fy_d": 5.8269103270988637e+02,
    "cx_d": 3.1304475870804731e+02, "cy_d": 2.3844389626620386e+02,
    # R = -[...]; R = reshape(R, [3 3]); R = inv(R'): MATLAB fills the reshape column by column.
    "R": np.linalg.inv(-np.array([
        9.9997798940829263e-01, 5.0518419386157446e-03, 4.3011152014118693e-03,
        -5.0359919480810989e-03, 9.9998051861143999e-01, -3.6879781309514218e-03,
        -4.3196624923060242e-03, 3.6662365748484798e-03, 9.9998394948385538e-01]).reshape(3, 3, order="F").T),
    "T": np.array([2.5031875059141302e-02, -2.9342312935846411e-04, 6.6238747008330102e-04]),
    # Lens distortion, [k1, k2, p1, p2, k3] as the toolbox passes them to undistort.
    "kc_rgb": np.array([2.0796615318809061e-01, -5.8613825163911781e-01, 7.2231363135888329e-04,
                        1.0479627195765181e-03, 4.9856986684705107e-01]),
    "kc_d": np.array([-9.9897236553084481e-02, 3.9065324602765344e-01, 1.9290592870229277e-03,
                      -1.9422022475975055e-03, -5.1031725053400578e-01]),
    "depth_param1": 351.3, "depth_param2": 1092.5, "max_depth": 10.0,
}


def read_kinect_pgm(path: str | Path) -> np.ndarray:
    """Reads a raw NYUv2 depth frame (``d-*.pgm``) as ``(H, W)`` uint16 Kinect values (0..2047).

    The toolbox reads these files with ``imread`` and then swaps the bytes of every sample, so the dumps hold
    little-endian 16-bit values under a PGM header (PGM itself prescribes big-endian). That reading is tried first;
    if it gives values above 2047 (impossible for the 11-bit sensor) and the big-endian reading does not, the file
    is taken as big-endian (a dump re-saved by a PGM-conforming tool).

    Args:
        path: The ``.pgm`` file.

    Returns:
        The raw values, ``(height, width)`` uint16.

    Raises:
        DatasetError: If the file is missing, not a 16-bit binary PGM, truncated, or holds values above 2047 in
            either byte order.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "d-1.0-1.pgm"
        >>> _ = path.write_bytes(b"P5\\n2 1\\n65535\\n" + np.array([[700, 2047]], "<u2").tobytes())
        >>> read_kinect_pgm(path).tolist()
        [[700, 2047]]
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"file not found: {path}") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {path} ({exc})") from exc
    # Header: "P5", width, height, maxval, each after whitespace (and possibly "#" comments), then one whitespace.
    fields: list[int] = []
    pos = 2
    if not data.startswith(b"P5"):
        raise DatasetError(f"{path}: not a binary PGM (P5) file; raw NYUv2 depth frames are d-*.pgm from the "
                           f"official dumps. {_SOURCE}")
    while len(fields) < 3:
        match = _PGM_FIELD.match(data, pos)
        if match is None:
            raise DatasetError(f"{path}: unreadable PGM header; the file is corrupt")
        fields.append(int(match.group(1)))
        pos = match.end()
    width, height, maxval = fields
    pos += 1  # the single whitespace byte that ends the header
    if maxval < 256:
        raise DatasetError(f"{path}: 8-bit PGM (maxval {maxval}); raw Kinect depth frames are 16-bit")
    if len(data) - pos < 2 * width * height:
        raise DatasetError(f"{path}: {len(data) - pos} bytes of pixel data, expected {2 * width * height} for "
                           f"{width}x{height}; the file is truncated")
    pixels = np.frombuffer(data, dtype="<u2", count=width * height, offset=pos).reshape(height, width)
    if pixels.max(initial=0) > _NO_READING:
        swapped = pixels.byteswap()
        if swapped.max(initial=0) > _NO_READING:
            raise DatasetError(f"{path}: values above {_NO_READING} in either byte order; not a raw 11-bit Kinect "
                               "depth frame")
        pixels = swapped
    return pixels.astype(np.uint16)


def kinect_to_metres(raw: np.ndarray) -> np.ndarray:
    """The toolbox's ``depth_rel2depth_abs``: metres = 351.3 / (1092.5 − raw), clipped to 0..10 m.

    Raw 2047 (no reading) and every raw value above 1092.5 give a negative value, hence 0 (missing).

    Examples:
        >>> kinect_to_metres(np.array([800, 2047])).round(4).tolist()
        [1.201, 0.0]
    """
    k = NYU_KINECT
    depth = k["depth_param1"] / (k["depth_param2"] - raw.astype(np.float64))
    return np.clip(depth, 0.0, k["max_depth"])


_LOOKUPS: dict[str, tuple[np.ndarray, ...]] = {}


def _lookup(camera: str) -> tuple[np.ndarray, ...]:
    """``rect.m``'s lookup for one camera, computed once: for each output pixel whether its source lies inside, the
    top-left source pixel, and the bilinear fractions."""
    if camera not in _LOOKUPS:
        k = NYU_KINECT
        suffix = "rgb" if camera == "rgb" else "d"
        fx, fy, cx, cy = (k[f"{name}_{suffix}"] for name in ("fx", "fy", "cx", "cy"))
        k1, k2, p1, p2, k3 = k[f"kc_{suffix}"]
        rows, cols = np.mgrid[0:_HEIGHT, 0:_WIDTH].astype(np.float64)  # rect.m works in 0-based pixels (px - 1)
        x, y = (cols - cx) / fx, (rows - cy) / fy
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3  # apply_distortion.m
        source_x = fx * (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)) + cx
        source_y = fy * (y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y) + cy
        x0, y0 = np.floor(source_x), np.floor(source_y)
        inside = (x0 >= 0) & (x0 <= _WIDTH - 2) & (y0 >= 0) & (y0 <= _HEIGHT - 2)
        x0, y0 = np.where(inside, x0, 0).astype(np.int64), np.where(inside, y0, 0).astype(np.int64)
        _LOOKUPS[camera] = (inside, y0, x0, source_x - x0, source_y - y0)
    return _LOOKUPS[camera]


def undistort(image: np.ndarray, camera: str) -> np.ndarray:
    """Removes the lens distortion of one NYUv2 Kinect camera as the toolbox's ``undistort`` (Bouguet's ``rect.m``).

    Each output pixel ``(r, c)`` (0-based) is normalised with the camera's intrinsics, sent through the distortion
    model (``apply_distortion.m``: radial ``1 + k1 r² + k2 r⁴ + k3 r⁶``, tangential p1, p2) back to the input, and
    interpolated bilinearly from the four pixels around; where that source is not inside the image (its top-left
    neighbour beyond the second-to-last row or column) the output is 255.

    Args:
        image: ``(480, 640)`` or ``(480, 640, C)`` array.
        camera: ``"rgb"`` or ``"depth"``: whose intrinsics and distortion to use.

    Returns:
        The undistorted image, float64, same shape.

    Raises:
        DatasetError: If ``image`` is not 480×640 or ``camera`` is neither.

    Examples:
        >>> out = undistort(np.full((480, 640), 7.0), "rgb")
        >>> float(out[240, 320]), float(out[0, 0])  # the centre keeps its value; the corner's source is outside
        (7.0, 255.0)
    """
    if camera not in ("rgb", "depth"):
        raise DatasetError(f"camera must be 'rgb' or 'depth', got {camera!r}")
    if image.shape[:2] != (_HEIGHT, _WIDTH):
        raise DatasetError(f"image is {image.shape[0]}x{image.shape[1]}, expected {_HEIGHT}x{_WIDTH}: the "
                           "toolbox's calibration is for 640x480 Kinect frames")
    inside, y0, x0, ax, ay = _lookup(camera)
    if image.ndim == 3:
        inside, ax, ay = inside[..., None], ax[..., None], ay[..., None]
    values = image.astype(np.float64)
    out = ((1 - ay) * (1 - ax) * values[y0, x0] + (1 - ay) * ax * values[y0, x0 + 1]
           + ay * (1 - ax) * values[y0 + 1, x0] + ay * ax * values[y0 + 1, x0 + 1])
    return np.where(inside, out, 255.0)


def align_depth_to_rgb(raw: np.ndarray) -> np.ndarray:
    """Turns a raw 480×640 Kinect frame into depth in metres seen from the (undistorted) RGB camera, as the
    toolbox's ``project_depth_map.m`` (see the module's notes for its steps and the one difference).

    Args:
        raw: ``(480, 640)`` raw Kinect values, as :func:`read_kinect_pgm` returns them.

    Returns:
        ``(480, 640)`` float32 depth in metres aligned to the RGB image, 0 = missing.

    Raises:
        DatasetError: If ``raw`` is not 480×640 (the calibration is for that size).

    Examples:
        >>> depth = align_depth_to_rgb(np.full((480, 640), 800, np.uint16))
        >>> round(float(depth[240, 320]), 4), float(depth[0, 0])
        (1.201, 0.0)
    """
    if raw.shape != (_HEIGHT, _WIDTH):
        raise DatasetError(f"raw depth frame is {raw.shape[0]}x{raw.shape[1]}, expected {_HEIGHT}x{_WIDTH}: the "
                           "toolbox's calibration is for 640x480 Kinect frames")
    k = NYU_KINECT
    # As the toolbox: undistorting blends raw values across holes, so every pixel that drew on a hole (or on the
    # outside, 255 in the undistorted mask) is no reading; so are values below 600 (nearer than 0.71 m, and the
    # outside's 255), which the labelled set's rawDepths lack for the same reason.
    holes = undistort(255.0 * (raw == _NO_READING), "depth") > 0
    undistorted = undistort(raw, "depth")
    undistorted[holes | (undistorted < 600)] = _NO_READING
    depth = kinect_to_metres(undistorted)
    yy, xx = np.mgrid[1:_HEIGHT + 1, 1:_WIDTH + 1]  # 1-based, as MATLAB's meshgrid(1:W, 1:H)
    points = np.stack([(xx - k["cx_d"]) * depth / k["fx_d"], (yy - k["cy_d"]) * depth / k["fy_d"], depth])
    points = np.einsum("ij,jhw->ihw", k["R"], points) + k["T"][:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # floor(v + 0.5) is MATLAB's round for v >= 0; negative positions are dropped below either way.
        x = np.floor(points[0] * k["fx_rgb"] / points[2] + k["cx_rgb"] + 0.5)
        y = np.floor(points[1] * k["fy_rgb"] / points[2] + k["cy_rgb"] + 0.5)
    # Points without depth sit at T, which the toolbox projects far outside the image; dropping them says so.
    good = (depth > 0) & (x > 0) & (x < _WIDTH) & (y > 0) & (y < _HEIGHT)
    target = ((y[good] - 1) * _WIDTH + (x[good] - 1)).astype(np.int64)
    values = depth[good]
    order = np.lexsort((values, target))  # by target pixel, nearest first: the z-buffer keeps the first of each
    first = np.unique(target[order], return_index=True)[1]
    out = np.zeros(_HEIGHT * _WIDTH, dtype=np.float32)
    out[target[order][first]] = values[order][first]
    return out.reshape(_HEIGHT, _WIDTH)


def _frames(scene_dir: Path) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """The scene's RGB and depth frames as sorted ``(timestamp, file name)`` lists."""
    rgb: list[tuple[float, str]] = []
    depth: list[tuple[float, str]] = []
    with os.scandir(scene_dir) as entries:  # scandir: scene folders hold thousands of files
        for entry in entries:
            match = _FRAME.match(entry.name)
            if match and (match.group(1) == "r") == (match.group(3) == "ppm"):
                (rgb if match.group(1) == "r" else depth).append((float(match.group(2)), entry.name))
    return sorted(rgb), sorted(depth)


class NYUv2Raw(Dataset):
    """Unlabelled RGB-D frames from NYU Depth V2's raw scene dumps: each RGB frame (undistorted) with the
    nearest-in-time depth frame, converted to metres and aligned to the RGB camera as the official toolbox does (see
    the module's notes).

    Samples are unlabelled: ``{"rgb": (3, 480, 640), "depth": (1, 480, 640) metres (0 = missing), "id":
    "nyuv2raw/<scene>/<rgb file stem>"}``. The labelled NYUv2 frames come from these recordings and its official
    split is by scene, so leave out the test split's scenes to keep test images out of training
    (``exclude_scenes=NYUv2(root, "test").scenes()``). A frame costs about 0.2 s on one core; for many epochs,
    write the frames once with :func:`~depthdistill.data.export_to_folder` and read them with
    :class:`~depthdistill.data.RGBDFolder`.

    Args:
        root: Folder holding the scene folders (``root/<scene>/r-*.ppm``), or folders of them
            (``root/<part>/<scene>/``, as several archives unpack).
        scenes: Only these scene folder names (all found by default).
        exclude_scenes: Scene folder names to leave out (names not present are ignored).
        stride: Keep every ``stride``-th RGB frame of each scene (consecutive frames at up to 30 fps are
            near-duplicates).
        transform: Joint transform applied to each sample dict.

    Attributes:
        labelled: ``False``.
        frames: ``(scene, rgb path, depth path, |time difference| in s)`` per sample, in scene and time order.

    Raises:
        DatasetError: If ``root`` is missing, holds no scene folder, a requested scene is absent, or a scene has RGB
            frames but no depth frame; when a sample is read, a missing, corrupt or wrongly sized frame (naming the
            file).

    Examples:
        >>> ds = NYUv2Raw("/data/nyuv2_raw", exclude_scenes=NYUv2("/data/nyuv2", "test").scenes())  # doctest: +SKIP
        >>> sorted(ds[0]), ds[0]["depth"].shape                                                      # doctest: +SKIP
        (['depth', 'id', 'rgb'], torch.Size([1, 480, 640]))
    """

    labelled = False

    def __init__(self, root: str | Path, scenes: Sequence[str] | None = None, exclude_scenes: Iterable[str] = (),
                 stride: int = 1, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if stride < 1:
            raise DatasetError(f"stride must be >= 1, got {stride}")
        self.root = Path(root)
        self.transform = transform
        if not self.root.is_dir():
            raise DatasetError(f"NYUv2 raw folder not found: {self.root}. {_SOURCE}")
        found = {d.name: d for d in sorted(self.root.glob("*/")) + sorted(self.root.glob("*/*/"))
                 if d.is_dir() and next(d.glob("r-*.ppm"), None) is not None}
        if not found:
            raise DatasetError(f"no scene folder with r-*.ppm frames in {self.root} or one level below. {_SOURCE}")
        if scenes is not None:
            absent = sorted(set(scenes) - set(found))
            if absent:
                raise DatasetError(f"scene(s) {absent[:5]} not found under {self.root} (found {len(found)}, e.g. "
                                   f"{sorted(found)[:3]})")
        chosen = sorted((set(found) if scenes is None else set(scenes)) - set(exclude_scenes))
        self.frames: list[tuple[str, Path, Path, float]] = []
        for scene in chosen:
            rgb, depth = _frames(found[scene])
            if not depth:
                raise DatasetError(f"{found[scene]} has {len(rgb)} RGB frames but no d-*.pgm depth frame; is the "
                                   "scene dump complete?")
            times = np.array([t for t, _ in depth])
            for t, name in rgb[::stride]:
                j = int(np.searchsorted(times, t))
                nearest = min((i for i in (j - 1, j) if 0 <= i < len(times)), key=lambda i: abs(times[i] - t))
                self.frames.append((scene, found[scene] / name, found[scene] / depth[nearest][1],
                                    abs(float(times[nearest]) - t)))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, rgb_path, depth_path, _ = self.frames[index]
        try:
            rgb = undistort(read_image(rgb_path), "rgb")
        except DatasetError as exc:
            raise DatasetError(f"{rgb_path}: {exc}") from exc
        rgb = np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)  # MATLAB's uint8(): round, saturate
        try:
            depth = align_depth_to_rgb(read_kinect_pgm(depth_path))
        except DatasetError as exc:
            raise DatasetError(f"{depth_path}: {exc}") from exc
        sample = make_sample(rgb, depth, None, f"nyuv2raw/{scene}/{rgb_path.stem}")
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"NYUv2Raw(root={str(self.root)!r}, samples={len(self)}, unlabelled)"
