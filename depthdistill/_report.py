"""The one-page run report (``report.md`` and ``report.html``): the results table in the paper's form, a line on
each of its rows, more tables, and the figures. Re-exported as :func:`depthdistill.viz.write_report`.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from depthdistill.errors import ConfigError

__all__ = ["write_report"]

_STYLE = ("<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:.3em .8em;text-align:right}"
          "th:first-child,td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}</style>")


def _row_values(row: Any) -> tuple[str, str, float, float, float]:
    """``(name, input, mPA, mIoU, pixel accuracy)`` of a ResultRow-like object or a mapping."""
    def get(key: str, default: Any = None) -> Any:
        return row.get(key, default) if isinstance(row, Mapping) else getattr(row, key, default)

    try:
        return (str(get("name")), str(get("input", "")), float(get("mean_pixel_accuracy")),
                float(get("mean_iou")), float(get("pixel_accuracy")))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"a results row needs name, mean_pixel_accuracy, mean_iou and pixel_accuracy "
                          f"(fractions), got {row!r}") from error


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def write_report(
    out_dir: str | os.PathLike,
    table: Iterable[Any],
    images: Mapping[str, str | os.PathLike],
    title: str = "depthdistill results",
    notes: str | None = None,
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[str]]]] | None = None,
    row_notes: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Writes a one-page report, ``report.md`` and ``report.html``: a results table and the images.

    The table has the paper's form: row, input, mPA, mIoU and pixel accuracy, in % with one decimal. With
    ``row_notes`` a list under it says in one line each what every row is, so that a reader who has not read the
    paper can read the table. Images are linked by paths relative to ``out_dir``, so keep them with the report
    (e.g. in ``out_dir`` itself).

    Args:
        out_dir: Directory of the report (created if needed).
        table: Rows: :class:`~depthdistill.ResultRow` objects (a :class:`~depthdistill.ResultsTable`) or
            mappings with ``name``, ``mean_pixel_accuracy``, ``mean_iou``, ``pixel_accuracy`` (fractions) and
            optionally ``input`` (such as the rows of ``results.json``).
        images: ``{caption: image path}``, in display order.
        title: The page title.
        notes: A paragraph shown under the title (what was run, on what machine, how long it took).
        tables: More tables after the results, ``{caption: (header, rows of cell strings)}``, in display order
            (the demo adds the teacher's removal report).
        row_notes: ``{row name: one line on what the row is}`` (what it starts from, its loss and input, its
            epochs, what it is tested on); every row of ``table`` needs one.

    Returns:
        ``{"markdown": path, "html": path}``.

    Raises:
        ConfigError: If a row lacks a metric or a note (when ``row_notes`` is given), or an image file is missing.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"name": "SN", "input": "RGB", "mean_pixel_accuracy": 0.51, "mean_iou": 0.381,
        ...          "pixel_accuracy": 0.7}]
        >>> paths = write_report(out, rows, {}, row_notes={"SN": "the student"})
        >>> text = paths["markdown"].read_text()
        >>> "| SN | RGB | 51.0 | 38.1 | 70.0 |" in text, "- **SN**: the student" in text
        (True, True)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_row_values(row) for row in table]
    notes_of_rows = [(name, row_notes.get(name)) for name, *_ in rows] if row_notes is not None else []
    unexplained = [name for name, note in notes_of_rows if note is None]
    if unexplained:
        raise ConfigError(f"row_notes has no line for row(s) {unexplained}; give one for every row of the table or "
                          "leave row_notes out")
    links = {}
    for caption, image in images.items():
        if not Path(image).is_file():
            raise ConfigError(f"image {image} for {caption!r} does not exist; write the plots before the report")
        links[caption] = Path(os.path.relpath(Path(image).resolve(), out_dir.resolve())).as_posix()

    header = ("row", "input", "mPA %", "mIoU %", "pixel acc. %")
    cells = [(name, source, _percent(mpa), _percent(miou), _percent(pa)) for name, source, mpa, miou, pa in rows]
    markdown = [f"# {title}", ""]
    if notes:
        markdown += [notes, ""]
    markdown += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    markdown += ["| " + " | ".join(row) + " |" for row in cells]
    if notes_of_rows:
        markdown += ["", "What each row is:", ""]
        markdown += [f"- **{name}**: {note}" for name, note in notes_of_rows]
    extra = dict(tables or {})
    for caption, (head, body) in extra.items():
        markdown += ["", f"## {caption}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        markdown += ["| " + " | ".join(row) + " |" for row in body]
    for caption, link in links.items():
        markdown += ["", f"## {caption}", "", f"![{caption}]({link})"]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(markdown) + "\n", encoding="utf-8")

    esc = html.escape
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
            _STYLE,
            "</head><body>", f"<h1>{esc(title)}</h1>"]
    if notes:
        page.append(f"<p>{esc(notes)}</p>")
    page.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    page += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells]
    page.append("</tbody></table>")
    if notes_of_rows:
        page.append("<p>What each row is:</p><ul>")
        page += [f"<li><b>{esc(name)}</b>: {esc(note)}</li>" for name, note in notes_of_rows]
        page.append("</ul>")
    for caption, (head, body) in extra.items():
        page += [f"<h2>{esc(caption)}</h2>",
                 "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        page += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body]
        page.append("</tbody></table>")
    for caption, link in links.items():
        page += [f"<h2>{esc(caption)}</h2>", f'<img src="{esc(link)}" alt="{esc(caption)}">']
    page.append("</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(page) + "\n", encoding="utf-8")
    return {"markdown": md_path, "html": html_path}
