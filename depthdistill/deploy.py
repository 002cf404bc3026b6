"""Exporting a student to TorchScript or ONNX, checked against PyTorch (``depthdistill export``)."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from depthdistill.errors import ConfigError, DepthDistillError
from depthdistill.inference import ModelInput, load_student

__all__ = ["ExportResult", "export", "EXPORT_FORMATS"]

#: The formats :func:`export` writes, with the file suffix it gives each by default.
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt"}


@dataclass
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        path: The exported file.
        format: ``"onnx"`` or ``"torchscript"``.
        max_difference: Largest absolute difference between the exported model's logits and PyTorch's on the
            check inputs (a batch of one and one of two random images).
    """

    path: Path
    format: str
    max_difference: float


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    # TorchScript is deprecated upstream but still what many C++/mobile deployments load; the user asked for it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, example, check_trace=False).save(str(path))
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> Callable:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("ONNX export needs the packages onnx, onnxscript and onnxruntime (to check the export): "
                          "pip install onnx onnxscript onnxruntime") from exc
    kwargs = {"opset_version": opset} if opset else {}
    auto = torch.export.Dim.AUTO  # batch, height and width stay dynamic unless the model fixes them
    torch.onnx.export(model, (example,), str(path), input_names=["rgb"], output_names=["logits"], dynamo=True,
                      dynamic_shapes=({0: auto, 2: auto, 3: auto},), verbose=False, **kwargs)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"rgb": x.numpy()})[0])


def export(
    model: ModelInput,
    format: str,
    out: str | os.PathLike | None = None,
    *,
    height: int = 64,
    width: int = 64,
    opset: int | None = None,
    atol: float = 1e-4,
    model_spec: dict[str, Any] | None = None,
) -> ExportResult:
    """Exports a plain student (RGB in, logits out) and checks the export against PyTorch.

    The model is traced on a random image of ``height`` × ``width``; the exported file is then run on that image
    and on a batch of two, and its logits must match PyTorch's within ``atol``. The ONNX export uses torch's
    dynamo exporter (packages onnx, onnxscript) with dynamic batch, height and width, and is checked with
    onnxruntime. A depth-aware teacher cannot be exported (it needs depth through a context): export a student.
    ``depthdistill export`` runs this.

    Args:
        model: A plain model (a student or baseline) or its checkpoint. A module is exported from a copy, on the
            CPU in eval mode; the module itself is left as it is.
        format: ``"onnx"`` or ``"torchscript"`` (see :data:`EXPORT_FORMATS`).
        out: The file to write. Default for a checkpoint: ``student.onnx`` / ``student.ts.pt`` next to it;
            required for a module.
        height: Height of the example input used to trace.
        width: Width of the example input.
        opset: ONNX opset version (default: the exporter's); ignored by TorchScript.
        atol: Largest allowed difference to PyTorch's logits.
        model_spec: ``{"name": …, "args": {…}}`` as in a run file, for a checkpoint that does not name its model
            (see :func:`~depthdistill.engine.registry.load_model`).

    Returns:
        The :class:`ExportResult`: path, format and the largest difference found.

    Raises:
        DepthError: If the model is a depth-aware teacher.
        ConfigError: On an unknown format, a size below 1, a negative ``atol``, a module without ``out``, or ONNX
            without its packages.
        DepthDistillError: If the exported model's output differs from PyTorch's in shape or by more than
            ``atol`` (the file is kept for inspection).

    Examples:
        >>> import tempfile, torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        >>> result = export(model, "torchscript", f"{tempfile.mkdtemp()}/student.ts.pt", height=8, width=8)
        >>> result.path.name, result.max_difference <= 1e-4
        ('student.ts.pt', True)
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {size!r}")
    if not atol >= 0:
        raise ConfigError(f"atol must be >= 0, got {atol!r}")
    if out is None and isinstance(model, nn.Module):
        raise ConfigError("export(module, …) needs out, the file to write (a checkpoint's export goes next to it)")
    net, _ = load_student(model, model_spec, "export")
    if isinstance(model, nn.Module):
        net = copy.deepcopy(net).cpu().eval()
    path = Path(out) if out is not None else Path(model).with_name(f"student{EXPORT_FORMATS[format]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, height, width)
    with torch.no_grad():
        run = _export_onnx(net, example, path, opset) if format == "onnx" else _export_torchscript(net, example, path)
        diff = 0.0
        for check in (example, torch.rand(2, 3, height, width)):  # also a batch of two
            expected, got = net(check), run(check)
            if got.shape != expected.shape:
                raise DepthDistillError(f"the exported model returns {tuple(got.shape)} for input "
                                        f"{tuple(check.shape)}, PyTorch {tuple(expected.shape)}: {path}")
            diff = max(diff, float((got - expected).abs().max()))
    if not diff <= atol:
        raise DepthDistillError(f"the exported model's logits differ from PyTorch's by up to {diff:.3g} "
                                f"(> atol {atol}): {path}")
    return ExportResult(path, format, diff)
