"""What an experiment reports: one :class:`ResultRow` per trained model, gathered in a :class:`ResultsTable`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from depthdistill.serialization import jsonable

__all__ = ["ResultRow", "ResultsTable"]


@dataclass
class ResultRow:
    """One trained model's test metrics.

    Attributes:
        name: One of :data:`EXPERIMENT_ROWS`.
        input: What the model sees at test time, ``"RGB"`` or ``"RGB-D"``.
        mean_pixel_accuracy: mPA on the test set (fraction, not %).
        mean_iou: mIoU.
        pixel_accuracy: Overall pixel accuracy.
        epochs: Epochs this row's own phase trained (SN and BL+PS start from TN's weights; TN→RGB trains none).
        seconds: Wall time of its training.
        per_class_iou: IoU per class (NaN for classes absent from the test set).
    """

    name: str
    input: str
    mean_pixel_accuracy: float
    mean_iou: float
    pixel_accuracy: float
    epochs: int
    seconds: float
    per_class_iou: list[float] = field(default_factory=list)


class ResultsTable:
    """The rows of an experiment, printable in the paper's form (mPA / mIoU in %) and saved as JSON.

    Examples:
        >>> t = ResultsTable([ResultRow("BL", "RGB", 0.5, 0.25, 0.75, 1, 0.1)])
        >>> t["BL"].mean_iou
        0.25
        >>> print(t.to_markdown().splitlines()[2])
        | BL | RGB | 50.0 | 25.0 | 75.0 | 1 | 0.1 |
    """

    def __init__(self, rows: Sequence[ResultRow], info: dict[str, Any] | None = None) -> None:
        self.rows = list(rows)
        self.info = dict(info or {})

    def __getitem__(self, name: str) -> ResultRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_markdown(self) -> str:
        """A Markdown table: row, input, mPA %, mIoU %, pixel accuracy %, epochs, training seconds."""
        lines = ["| row | input | mPA % | mIoU % | pixel acc. % | epochs | train s |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.input} | {100 * r.mean_pixel_accuracy:.1f} | {100 * r.mean_iou:.1f} | "
                         f"{100 * r.pixel_accuracy:.1f} | {r.epochs} | {r.seconds:.1f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``{"rows": [...], "info": {...}}``, JSON-safe (NaN as ``None``, see
        :func:`depthdistill.serialization.jsonable`)."""
        return jsonable({"rows": [asdict(r) for r in self.rows], "info": self.info})

    def save_json(self, path: str | os.PathLike) -> Path:
        """Writes :meth:`to_dict` as indented JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def __str__(self) -> str:
        return self.to_markdown()
