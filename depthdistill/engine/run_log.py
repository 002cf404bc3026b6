"""What a run reports: a JSON-lines metrics log, a one-line summary per epoch, and tqdm progress bars.

Only rank 0 writes or prints. Progress bars appear only when standard error is a terminal (not in CI logs or
redirected output) unless asked for explicitly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from depthdistill.engine.distributed import is_main_process
from depthdistill.serialization import jsonable

__all__ = ["RunLog", "progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T], *, enabled: bool | None = None, **tqdm_kwargs: Any) -> Iterator[T]:
    """Wraps ``iterable`` in a tqdm bar on rank 0 when ``enabled`` (``None``: only if stderr is a terminal).

    Args:
        iterable: What to iterate.
        enabled: Force the bar on or off; ``None`` decides from the terminal.
        **tqdm_kwargs: Passed to ``tqdm`` (``desc``, ``total``, ``leave`` …).

    Examples:
        >>> list(progress(range(3), enabled=False))
        [0, 1, 2]
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    return iter(tqdm(iterable, disable=not (enabled and is_main_process()), dynamic_ncols=True, **tqdm_kwargs))


class RunLog:
    """Appends one JSON object per line to ``<run_dir>/metrics.jsonl`` and prints a line per epoch.

    Each record gets ``time`` (seconds since the epoch, UTC). NaN becomes ``null`` so every line is valid JSON.
    Nothing is written or printed on ranks other than 0, nor when ``path`` is ``None``.

    Args:
        path: The JSON-lines file, or ``None`` to keep no file.
        echo: Print the per-epoch summary lines (to stdout).

    Examples:
        >>> import tempfile, pathlib
        >>> log = RunLog(pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl", echo=False)
        >>> log.write({"phase": "teacher", "epoch": 0, "loss": 0.5})
        >>> json.loads(log.path.read_text())["loss"]
        0.5
    """

    def __init__(self, path: str | os.PathLike | None, echo: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.echo = echo

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` (plus a timestamp) as one JSON line."""
        if self.path is None or not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(jsonable({**record, "time": round(time.time(), 3)}), sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def rewind(self, phase: str, epoch: int, step: int) -> int:
        """Drops the records of ``phase`` from a resumed point on, so that the resumed run logs each one once.

        Removed: step records past optimiser step ``step``, epoch records of epoch ``epoch`` and later, and
        unreadable lines (a kill while writing). Other records stay. The file is rewritten atomically.

        Returns:
            The number of lines removed.

        Examples:
            >>> import tempfile, pathlib
            >>> log = RunLog(pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl", echo=False)
            >>> for record in ({"phase": "tn", "epoch": 0, "step": 1}, {"phase": "tn", "epoch": 0},
            ...                {"phase": "tn", "epoch": 1, "step": 2}):
            ...     log.write(record)
            >>> log.rewind("tn", epoch=1, step=1)
            1
        """
        if self.path is None or not is_main_process() or not self.path.is_file():
            return 0

        def keep(line: str) -> bool:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return False
            if not isinstance(record, dict) or record.get("phase") != phase:
                return True
            if "step" in record:
                return record["step"] <= step
            return "epoch" not in record or record["epoch"] < epoch

        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if keep(line)]
        if len(kept) < len(lines):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        return len(lines) - len(kept)

    def say(self, phase: str, text: str) -> str:
        """Formats (and, with ``echo``, prints on rank 0) one line about ``phase``; returns it.

        Examples:
            >>> RunLog(None, echo=False).say("student", "starts from the teacher's weights")
            "[student] starts from the teacher's weights"
        """
        line = f"[{phase}] {text}"
        if self.echo and is_main_process():
            tqdm.write(line, file=sys.stdout)
        return line

    def epoch_line(self, phase: str, epoch: int, epochs: int, values: dict[str, float]) -> str:
        """Formats (and, with ``echo``, prints on rank 0) the summary line of an epoch; returns it.

        Examples:
            >>> RunLog(None, echo=False).epoch_line("student", 0, 2, {"loss": 0.25, "val_mean_iou": 0.5})
            '[student] epoch 1/2  loss 0.25  val_mean_iou 0.5'
        """
        parts = [f"[{phase}] epoch {epoch + 1}/{epochs}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()]
        return self.say(phase, "  ".join(parts)[len(phase) + 3:])
