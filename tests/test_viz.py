"""Colours against hand-made palettes, depth holes, plots written (their data checked), the report's table."""

import json
import math

import numpy as np
import pytest
import torch
from matplotlib import colormaps, colors
from PIL import Image

from depthdistill import ConfigError, DepthError, ResultRow, ResultsTable, viz
from depthdistill.viz import plots
from depthdistill.data import IMAGENET_MEAN, IMAGENET_STD

PALETTE = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)


@pytest.fixture
def figures(monkeypatch):
    """Records each Figure a plot function saves, so tests can read back what was drawn."""
    drawn = []
    save = plots._save

    def spy(fig, path):
        drawn.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return drawn


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# --- colours -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_tensor", [False, True])
def test_colorize_uses_the_palette_and_paints_void_black(as_tensor):
    label = np.array([[0, 1, 2], [255, 2, 0]])
    expected = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]],
                         [[0, 0, 0], [70, 80, 90], [10, 20, 30]]], dtype=np.uint8)
    image = viz.colorize(torch.from_numpy(label) if as_tensor else label, PALETTE.tolist())
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("label, palette, match", [
    (np.array([[0, 3]]), PALETTE, r"\[3\] have no colour: the palette has 3"),
    (np.array([[-1, 0]]), PALETTE, "have no colour"),
    (np.array([[0.0, 1.0]]), PALETTE, "integer class indices"),
    (np.zeros((1, 2, 2), dtype=np.int64), PALETTE, r"\(H, W\)"),
    (np.array([[0]]), np.zeros((3, 4), dtype=np.uint8), r"\(N, 3\)"),
    (np.array([[0]]), np.array([[0, 0, 256]]), "0..255"),
])
def test_colorize_rejects_bad_input(label, palette, match):
    with pytest.raises(ConfigError, match=match):
        viz.colorize(label, palette)


# The PASCAL VOC colour map's first entries after black, as its devkit lists them.
_VOC_COLOURS = [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
                [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0]]


@pytest.mark.parametrize("n", [1, 13, 20, 40, 120, 894])
def test_label_palette_is_distinct_and_never_black(n):
    palette = viz.label_palette(n)
    assert palette.shape == (n, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette.tolist()}) == n
    assert (palette.astype(int).sum(axis=1) > 0).all()
    np.testing.assert_array_equal(palette, viz.label_palette(n))
    assert palette[:10].tolist() == _VOC_COLOURS[:n]


def test_dataset_palettes_come_from_the_one_generator():
    from depthdistill.data.nyuv2 import NYU13_PALETTE, NYU40_PALETTE
    from depthdistill.data.sunrgbd import SUNRGBD37_PALETTE

    for palette in (NYU13_PALETTE, NYU40_PALETTE, SUNRGBD37_PALETTE):
        np.testing.assert_array_equal(palette, viz.label_palette(len(palette)))


def test_rgb_to_image_undoes_imagenet_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    normalised = torch.from_numpy(((image / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_array_equal(viz.rgb_to_image(normalised), image)
    np.testing.assert_array_equal(viz.rgb_to_image(image), image)
    unit = torch.from_numpy((image / 255.0).transpose(2, 0, 1))
    np.testing.assert_array_equal(viz.rgb_to_image(unit, mean=None, std=None), image)


def test_rgb_to_image_clips_and_checks():
    assert viz.rgb_to_image(np.full((3, 1, 1), 5.0), None, None).tolist() == [[[255, 255, 255]]]
    with pytest.raises(ConfigError, match=r"\(3, H, W\) float"):
        viz.rgb_to_image(np.zeros((4, 2, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"\(H, W, 3\)"):
        viz.rgb_to_image(np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(ConfigError, match="both mean and std"):
        viz.rgb_to_image(np.zeros((3, 2, 2), dtype=np.float32), mean=IMAGENET_MEAN, std=None)


def test_overlay_blends_by_alpha_and_leaves_void_alone():
    image = np.array([[[100, 0, 200], [50, 50, 50], [0, 0, 0]]], dtype=np.uint8)
    label = np.array([[1, 255, 2]])
    out = viz.overlay(image, label, PALETTE, alpha=0.25)
    expected = [[round(0.75 * 100 + 0.25 * 40), round(0.25 * 50), round(0.75 * 200 + 0.25 * 60)],
                [50, 50, 50],
                [round(0.25 * 70), round(0.25 * 80), round(0.25 * 90)]]
    assert out[0].tolist() == expected
    np.testing.assert_array_equal(viz.overlay(image, label, PALETTE, alpha=0.0), image)
    assert viz.overlay(image, label, PALETTE, alpha=1.0)[0, 0].tolist() == [40, 50, 60]
    with pytest.raises(ConfigError, match="alpha"):
        viz.overlay(image, label, PALETTE, alpha=1.5)
    with pytest.raises(ConfigError, match="differ in size"):
        viz.overlay(image, np.array([[1, 2]]), PALETTE)


def test_depth_to_image_maps_range_and_marks_holes():
    depth = torch.tensor([[[0.0, 1.0, 3.0, 5.0, float("nan"), float("inf"), -2.0]]])
    image = viz.depth_to_image(depth)
    viridis = colormaps["viridis"]

    def rgb(t):
        return [round(255 * c) for c in viridis(t)[:3]]

    assert image[0, 1].tolist() == rgb(0.0)
    assert image[0, 2].tolist() == rgb(0.5)
    assert image[0, 3].tolist() == rgb(1.0)
    assert image[0, [0, 4, 5, 6]].tolist() == [[255, 255, 255]] * 4
    # Holes stand out: no valid depth is drawn white.
    assert (viz.depth_to_image(np.linspace(0.5, 10, 50)[None]).astype(int).sum(axis=-1) < 3 * 255).all()
    ranged = viz.depth_to_image(np.array([[0.5, 2.0, 9.0]]), min_depth=1.0, max_depth=3.0, hole_color=(255, 0, 255))
    assert ranged[0].tolist() == [rgb(0.0), rgb(0.5), rgb(1.0)]
    assert viz.depth_to_image(np.zeros((2, 2)), hole_color=(255, 0, 255)).reshape(-1, 3).tolist() == [[255, 0, 255]] * 4
    assert viz.depth_to_image(np.zeros((1, 1)), hole_color=viz.VOID_COLOR).tolist() == [[[0, 0, 0]]]
    with pytest.raises(DepthError, match=r"\(H, W\) or \(1, H, W\)"):
        viz.depth_to_image(np.ones((2, 3, 3)))


# --- plots ---------------------------------------------------------------------------------------------------

def _write_log(path, lines):
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_training_curves_plot_epoch_records_per_phase(tmp_path, figures):
    log = _write_log(tmp_path / "metrics.jsonl", [
        {"phase": "teacher", "epoch": 0, "step": 1, "loss": 99.0},             # a step record: ignored
        {"phase": "teacher", "epoch": 0, "loss": 2.0, "val_mean_iou": 0.1},
        {"phase": "teacher", "epoch": 1, "loss": 1.5, "val_mean_iou": None},
        {"phase": "teacher", "epoch": 1, "loss": 1.0, "val_mean_iou": 0.3},    # resumed: the last record wins
        {"phase": "student", "epoch": 0, "loss": 0.5, "mean_iou": 0.4},        # un-prefixed metric
        {"phase": "student", "test": {"mean_iou": 0.9}},                       # final test: ignored
    ])
    out = viz.plot_training_curves(log, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png" and _png_size(out)[0] > 0
    loss_ax, iou_ax = figures[0].axes
    assert loss_ax.get_title() == "training cross-entropy (CE)" and iou_ax.get_title() == "mIoU"
    assert iou_ax.get_ylabel() == "%"
    lines = {line.get_label(): line.get_data() for line in loss_ax.lines}
    assert [list(v) for v in lines["teacher"]] == [[1, 2], [2.0, 1.0]]
    assert [list(v) for v in lines["student"]] == [[1], [0.5]]
    ious = {line.get_label(): list(line.get_ydata()) for line in iou_ax.lines}
    assert ious["teacher"] == pytest.approx([10.0, 30.0]) and "student" not in ious  # val_ wins over plain


def test_training_curves_name_rows_and_keep_losses_of_different_kinds_apart(tmp_path, figures):
    log = [{"phase": phase, "epoch": 0, "loss": loss, **parts} for phase, loss, parts in [
        ("bl_tn_ps", 1.1, {}), ("bl_vtce", 2.8, {"ce": 2.0, "vtce": 0.8}), ("sn", 2.5, {"ce": 1.6, "vtce": 0.9}),
        ("tn", 2.0, {}), ("bl", 1.3, {}), ("my_phase", 0.7, {}),
    ]]
    viz.plot_training_curves(log, tmp_path / "curves.png")
    figure = figures[0]
    # the results table's row names, in its order; a phase that is no row keeps its name
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["BL", "TN", "SN", "BL+VTCE", "BL@TN+PS",
                                                                     "my_phase"]
    assert figure.legends[0].get_title().get_text() == "phase"
    ce_ax, vtce_ax = figure.axes
    # CE against CE: a student's CE part, never its CE + VTCE total
    ce = {line.get_label(): list(line.get_ydata()) for line in ce_ax.lines}
    assert ce == {"BL": [1.3], "TN": [2.0], "SN": [1.6], "BL+VTCE": [2.0], "BL@TN+PS": [1.1], "my_phase": [0.7]}
    assert ce_ax.get_ylabel().startswith("CE with the labels")
    assert {line.get_label(): list(line.get_ydata()) for line in vtce_ax.lines} == {"SN": [0.9], "BL+VTCE": [0.8]}
    assert vtce_ax.get_ylabel().startswith("VTCE")
    # one row has one colour in every panel
    colours = {line.get_label(): line.get_color() for ax in figure.axes for line in ax.lines}
    assert all(line.get_color() == colours[line.get_label()] for ax in figure.axes for line in ax.lines)
    assert len(set(map(str, colours.values()))) == len(colours)


def test_training_curves_legend_inverts_row_folder_for_every_row(tmp_path, figures):
    from depthdistill.distill import EXPERIMENT_ROWS, row_folder

    trained = [row for row in EXPERIMENT_ROWS if row != "TN→RGB"]  # TN→RGB trains nothing, so logs no epoch
    viz.plot_training_curves([{"phase": row_folder(row), "epoch": 0, "loss": 1.0} for row in reversed(trained)],
                             tmp_path / "curves.png")
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == trained
    assert figures[0].legends[0].get_title().get_text() == "row"


def test_training_curves_reject_a_log_without_losses(tmp_path):
    with pytest.raises(ConfigError, match="no epoch record with a loss"):
        viz.plot_training_curves([{"phase": "teacher", "epoch": 0}], tmp_path / "x.png")


def test_read_metrics_log_reports_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"phase": "teacher", "epoch": 0, "loss": 1}\n{"phase": \n')
    with pytest.raises(ConfigError, match="line 2 is not valid JSON"):
        viz.read_metrics_log(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="line 1 holds a list"):
        viz.read_metrics_log(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        viz.read_metrics_log(tmp_path / "absent.jsonl")


def test_vtce_schedule_plots_equation_10(tmp_path, figures):
    viz.plot_vtce_schedule(tmp_path / "vtce.png", betas=(0.5, 0.9), epochs=5)
    linear, logarithmic = figures[0].axes
    assert logarithmic.get_yscale() == "log"
    for ax in (linear, logarithmic):
        for line, beta in zip(ax.lines, (0.5, 0.9), strict=True):
            assert list(line.get_xdata()) == [0, 1, 2, 3, 4]
            expected = [math.exp(-beta * (e * e - e + 2) / 2) for e in range(5)]
            assert list(line.get_ydata()) == pytest.approx(expected, rel=1e-12)
    assert _png_size(tmp_path / "vtce.png")[0] > 0
    with pytest.raises(ConfigError, match="epochs"):
        viz.plot_vtce_schedule(tmp_path / "x.png", epochs=0)


def test_per_class_iou_bars(tmp_path, figures):
    rows = {"BL": [0.1, 0.2, float("nan")], "TN": torch.tensor([0.3, 0.5, float("nan")]), "SN": [0.4, 0.0, 0.6]}
    viz.plot_per_class_iou(rows, tmp_path / "iou.png", class_names=["wall", "floor", "bed"])
    ax = figures[0].axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([10.0, 20.0, 30.0, 50.0, 40.0, 0.0, 60.0], abs=1e-4)
    labels = figures[0].legends[0].get_texts()
    assert [t.get_text() for t in labels] == ["BL (mIoU 15.0%)", "TN (mIoU 40.0%)", "SN (mIoU 33.3%)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["wall", "floor", "bed"]
    with pytest.raises(ConfigError, match="same non-empty list"):
        viz.plot_per_class_iou({"BL": [0.1], "TN": [0.1, 0.2]}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        viz.plot_per_class_iou(rows, tmp_path / "x.png", class_names=["a", "b"])


def test_a_row_has_one_colour_in_the_training_curves_and_the_per_class_bars(tmp_path, figures):
    from depthdistill.distill import row_folder

    # the demo's table: a row of its own ("start") first, then experiment rows that skip some of the full table's
    names = ["start", "BL", "BL@TN", "TN", "SN", "SN-RGB"]
    viz.plot_training_curves([{"phase": row_folder(n) if n != "start" else n, "epoch": 0, "loss": 1.0}
                              for n in names], tmp_path / "curves.png")
    viz.plot_per_class_iou({name: [0.5, 0.5] for name in names}, tmp_path / "iou.png")
    curves = {line.get_label(): colors.to_rgba(line.get_color()) for line in figures[0].axes[0].lines}
    bars = {bars.get_label().split(" (")[0]: bars.patches[0].get_facecolor() for bars in figures[1].axes[0].containers}
    assert set(curves) == set(bars) == set(names)
    assert all(curves[name] == pytest.approx(bars[name]) for name in names)
    # an experiment row's colour is its place in the full table, whatever else is drawn: SN after TN→RGB's
    tab10 = colormaps["tab10"]
    assert curves["SN"] == pytest.approx(tab10(4)) and curves["BL"] == pytest.approx(tab10(0))
    assert len({tuple(c) for c in curves.values()}) == len(names)


def _sample(i, size=(6, 8)):
    generator = torch.Generator().manual_seed(i)
    return {"rgb": torch.randn(3, *size, generator=generator), "depth": torch.rand(1, *size, generator=generator) + 1,
            "label": torch.randint(0, 3, size, generator=generator), "id": f"s{i}"}


def test_sample_grid_has_a_column_per_model(tmp_path, figures):
    samples = [_sample(0), _sample(1)]
    predictions = {"BL": [s["label"] for s in samples], "TN": [torch.randn(3, 6, 8) for _ in samples]}
    out = viz.plot_sample_grid(samples, predictions, tmp_path / "grid.png", PALETTE)
    axes = figures[0].axes
    assert len(axes) == 2 * 5
    assert [ax.get_title() for ax in axes[:5]] == ["RGB", "depth (white: none)", "ground truth", "BL", "TN"]
    assert axes[0].get_ylabel() == "s0" and axes[5].get_ylabel() == "s1"
    # What each cell shows is the library's own picture of that sample.
    np.testing.assert_array_equal(axes[2].images[0].get_array(), viz.colorize(samples[0]["label"], PALETTE))
    np.testing.assert_array_equal(axes[4].images[0].get_array(),
                                  viz.colorize(predictions["TN"][0].argmax(0), PALETTE))
    np.testing.assert_array_equal(axes[5].images[0].get_array(), viz.rgb_to_image(samples[1]["rgb"]))
    assert _png_size(out)[0] > 0


def test_sample_grid_has_a_key_of_the_classes_shown(tmp_path, figures):
    sample = _sample(0)
    sample["label"] = torch.tensor([[0, 2], [255, 2]])
    sample["rgb"], sample["depth"] = sample["rgb"][:, :2, :2], sample["depth"][:, :2, :2]
    viz.plot_sample_grid([sample], {"SN": [torch.tensor([[0, 0], [1, 2]])]}, tmp_path / "grid.png", PALETTE,
                         class_names=["wall", "floor", "bed"])
    legend = figures[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["wall", "floor", "bed", "void"]
    colours = [tuple(np.round(np.asarray(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles]
    assert colours == [tuple(int(v) for v in c) for c in PALETTE] + [(0, 0, 0)]
    with pytest.raises(ConfigError, match="2 class names for a palette of 3"):
        viz.plot_sample_grid([sample], {}, tmp_path / "x.png", PALETTE, class_names=["a", "b"])


def test_sample_grid_checks_its_input(tmp_path):
    with pytest.raises(ConfigError, match="'BL' has 1 predictions for 2 samples"):
        viz.plot_sample_grid([_sample(0), _sample(1)], {"BL": [torch.zeros(6, 8, dtype=torch.long)]},
                             tmp_path / "x.png", PALETTE)
    with pytest.raises(ConfigError, match="lacks \\['depth'\\]"):
        viz.plot_sample_grid([{"rgb": torch.zeros(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long)}], {},
                             tmp_path / "x.png", PALETTE)


# --- report --------------------------------------------------------------------------------------------------

def test_report_has_the_table_and_the_images(tmp_path):
    viz.plot_vtce_schedule(tmp_path / "plots" / "vtce.png")
    table = ResultsTable([ResultRow("BL", "RGB", 0.228, 0.152, 0.611, 2, 1.0),
                          ResultRow("TN", "RGB-D", 0.482, 0.323, 0.705, 2, 1.0)])
    paths = viz.write_report(tmp_path, table, {"VTCE <schedule>": tmp_path / "plots" / "vtce.png"},
                             title="Synthetic run", notes="2 epochs & a 2-core CPU")
    markdown = paths["markdown"].read_text()
    assert "| row | input | mPA % | mIoU % | pixel acc. % |" in markdown
    assert "| BL | RGB | 22.8 | 15.2 | 61.1 |" in markdown
    assert "| TN | RGB-D | 48.2 | 32.3 | 70.5 |" in markdown
    assert "![VTCE <schedule>](plots/vtce.png)" in markdown and markdown.startswith("# Synthetic run")
    page = paths["html"].read_text()
    assert "<td>TN</td><td>RGB-D</td><td>48.2</td><td>32.3</td><td>70.5</td>" in page
    assert '<img src="plots/vtce.png" alt="VTCE &lt;schedule&gt;">' in page
    assert "2 epochs &amp; a 2-core CPU" in page
    assert (paths["html"].parent / "plots" / "vtce.png").is_file()


def test_report_accepts_results_json_rows_and_checks_them(tmp_path):
    rows = [{"name": "SN", "mean_pixel_accuracy": 0.5104, "mean_iou": float("nan"), "pixel_accuracy": 0.7}]
    markdown = viz.write_report(tmp_path, rows, {})["markdown"].read_text()
    assert "| SN |  | 51.0 | – | 70.0 |" in markdown
    with pytest.raises(ConfigError, match="needs name, mean_pixel_accuracy"):
        viz.write_report(tmp_path, [{"name": "SN", "mean_iou": 0.3}], {})
    with pytest.raises(ConfigError, match="does not exist"):
        viz.write_report(tmp_path, rows, {"curves": tmp_path / "absent.png"})


def test_report_explains_every_row_in_one_line(tmp_path):
    table = ResultsTable([ResultRow("BL", "RGB", 0.2, 0.1, 0.6, 2, 1.0),
                          ResultRow("BL@TN+PS", "RGB", 0.2, 0.1, 0.6, 1, 1.0)])
    notes = {"BL": "the baseline <plain>", "BL@TN+PS": "BL@TN continued", "SN": "not in this table"}
    paths = viz.write_report(tmp_path, table, {}, row_notes=notes)
    lines = paths["markdown"].read_text().splitlines()
    # under the table, in its order, one line each; a note for a row the table lacks is not shown
    start = lines.index("What each row is:")
    assert lines[start + 2:start + 4] == ["- **BL**: the baseline <plain>", "- **BL@TN+PS**: BL@TN continued"]
    assert lines.index("| BL@TN+PS | RGB | 20.0 | 10.0 | 60.0 |") < start and "not in this table" not in lines
    page = paths["html"].read_text()
    assert "<li><b>BL</b>: the baseline &lt;plain&gt;</li>" in page and "<li><b>BL@TN+PS</b>: " in page
    assert "What each row is" not in viz.write_report(tmp_path, table, {})["markdown"].read_text()
    with pytest.raises(ConfigError, match=r"no line for row\(s\) \['BL@TN\+PS'\]"):
        viz.write_report(tmp_path, table, {}, row_notes={"BL": "the baseline"})
