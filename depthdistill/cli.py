"""The ``depthdistill`` command: ``train``, ``evaluate``, ``predict``, ``export``, ``demo`` and ``prepare``.

A subcommand is one function registered with :func:`command`; its arguments are declared next to it with
:func:`arg`. Every subcommand is registered here and only parses its flags, calls the library (``predict``,
``export``, ``run_demo``, ``prepare_dataset`` …) and prints: no library module imports this one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from depthdistill.errors import ConfigError, DepthDistillError
from depthdistill.labels import VOID
from depthdistill.serialization import jsonable

__all__ = ["main", "command", "arg", "build_parser"]

@dataclass
class _Command:
    name: str
    help: str
    description: str
    arguments: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
    run: Callable[[argparse.Namespace], int | None]


_COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a subcommand, as for ``argparse.ArgumentParser.add_argument``.

    Examples:
        >>> arg("--out", required=True, help="output folder")
        (('--out',), {'required': True, 'help': 'output folder'})
    """
    return flags, kwargs


def command(name: str, help: str, arguments: Sequence[tuple[tuple[str, ...], dict[str, Any]]] = (),
            description: str | None = None) -> Callable[[Callable[[argparse.Namespace], int | None]], Callable]:
    """Registers ``function(args) -> exit code`` as the subcommand ``name``.

    Args:
        name: The subcommand.
        help: One line for ``depthdistill --help``.
        arguments: Its arguments, each made with :func:`arg`.
        description: The text of ``depthdistill NAME --help`` (default: the function's docstring).

    Examples:
        >>> @command("hello", help="print a greeting", arguments=[arg("--who", default="world")])
        ... def _hello(args):
        ...     print(f"hello {args.who}")
        >>> main(["hello", "--who", "you"])
        hello you
        0
        >>> del _COMMANDS["hello"]
    """

    def register(function: Callable[[argparse.Namespace], int | None]) -> Callable:
        if name in _COMMANDS:
            raise ConfigError(f"subcommand {name!r} is registered twice")
        _COMMANDS[name] = _Command(name, help, description or (function.__doc__ or help), arguments, function)
        return function

    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``depthdistill`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="depthdistill",
        description="Depth removal distillation: train a segmenter as an RGB-D teacher with depth-aware "
                    "convolutions, then as a plain RGB student sharing its weights (CE + VTCE).",
        epilog="Run `depthdistill COMMAND --help` for the options of each command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does (INFO level)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, kwargs in cmd.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``depthdistill`` / ``python -m depthdistill``; returns the exit code.

    Errors of the library (bad config, data, depth, a NaN loss) and missing files are printed as one line
    ``depthdistill: error: …`` with exit code 2, without a traceback (``-v`` shows it).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        code = args._run(args)
    except (DepthDistillError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"depthdistill: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


# ------------------------------------------------------------------------------------------------ helpers
def _dataset(data_cfg: Any, split_kwargs: dict[str, Any] | None) -> Any:
    from depthdistill.engine.registry import build_dataset

    return build_dataset(data_cfg.name, **{**data_cfg.args, **(split_kwargs or {})})


def _key_values(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    from depthdistill.distill.config import parse_key_value

    return dict(parse_key_value(item, what) for item in items or [])


#: The arguments naming a checkpoint's model, shared by evaluate, predict and export.
_MODEL_ARGS = [
    arg("--model", metavar="NAME", help="the checkpoint's model, when it does not name it or names it wrongly "
                                        "(as in a run file: deeplab_vgg16, smp:Arch/encoder, timm:backbone, "
                                        "package.module:factory)"),
    arg("--model-arg", metavar="KEY=VALUE", action="append", default=[],
        help="argument of --model's factory (repeatable), e.g. --model-arg width=16"),
]


def _model_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    """The model named by --model / --model-arg, or ``None`` for the checkpoint's own."""
    if args.model_arg and not args.model:
        raise ConfigError("--model-arg needs --model NAME")
    return {"name": args.model, "args": _key_values(args.model_arg, "--model-arg")} if args.model else None


def _checkpoint_model(args: argparse.Namespace, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    from depthdistill.engine.registry import load_model

    return load_model(args.checkpoint, map_location=device, model=_model_spec(args))


# ------------------------------------------------------------------------------------------------- train
@command("train", help="train TN → SN (and BL / ablations) from a YAML run file", arguments=[
    arg("--config", metavar="RUN.yaml", help="the run file (see docs/config.md); without it every key has its "
                                             "default"),
    arg("--set", metavar="KEY=VALUE", action="append", default=[],
        help="override a key of the run file, e.g. --set train.lr=0.001 --set experiment.rows='[BL, TN, SN]' "
             "(repeatable; values are YAML)"),
    arg("--out-dir", help="override out_dir"),
    arg("--resume", action="store_true", help="continue an interrupted run in out_dir (finished rows are loaded)"),
    arg("--print-config", action="store_true", help="print the complete run file with every default and exit"),
])
def _train(args: argparse.Namespace) -> int:
    """Trains the rows of a run file (default: TN then SN) and prints their test mPA / mIoU.

    Writes to out_dir: one folder per trained row (bl, bl_tn, tn, sn, bl_vtce, bl_ps, bl_tn_ps) with last.pt
    (full training state, every epoch), best.pt (best validation epoch) and model.pt (the final weights, usable
    by evaluate / predict / export), plus metrics.jsonl, results.json and config.yaml (the complete run file used,
    written when training starts). An out_dir that already holds a run is refused unless --resume continues
    it.
    The model is built after seeding with train.seed, so two runs of one run file train the same weights.
    Under `torchrun --nproc_per_node=N` it trains with DDP; rank 0 alone writes.
    """
    import yaml

    from depthdistill.distill import Distiller
    from depthdistill.distill.config import load_config
    from depthdistill.engine.distributed import init_distributed, is_main_process, shutdown_distributed
    from depthdistill.engine.loop import seed_everything
    from depthdistill.engine.registry import build_model

    cfg = load_config(args.config, args.set)
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if args.resume:
        cfg.resume = True
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not cfg.resume:
        _refuse_existing_run(Path(cfg.out_dir))
    init_distributed()
    train_set = _dataset(cfg.data, cfg.data.train)
    val_set = _dataset(cfg.data, cfg.data.val) if cfg.data.val is not None else None
    test_set = _dataset(cfg.data, cfg.data.test)
    unlabelled = _dataset(cfg.data, cfg.data.unlabelled) if cfg.data.unlabelled is not None else None
    num_classes = cfg.num_classes or getattr(train_set, "num_classes", None)
    if not num_classes:
        raise ConfigError("num_classes is not set and the training set has no num_classes attribute; "
                          "set num_classes in the run file")
    if cfg.train.seed is not None:  # the initial weights are part of what the seed fixes
        seed_everything(cfg.train.seed)
    model = build_model(cfg.model.name, num_classes, **cfg.model.args)
    distiller = Distiller(model, num_classes, cfg.distill, train_settings=cfg.train, ignore_index=cfg.ignore_index,
                          out_dir=cfg.out_dir, resume=cfg.resume, callbacks=[_ConfigWriter(cfg)],
                          meta={"model": asdict(cfg.model), "config": cfg.to_dict()})
    e = cfg.experiment
    table = distiller.run_experiment(train_set, test_set, teacher_epochs=e.teacher_epochs,
                                     student_epochs=e.student_epochs, baseline_epochs=e.baseline_epochs,
                                     val_data=val_set, rows=e.rows, unlabelled_data=unlabelled)
    if is_main_process():
        print(table.to_markdown())
        print(f"results: {Path(cfg.out_dir) / 'results.json'}")
    shutdown_distributed()  # on success only: after a failure, the other ranks may never reach the barrier
    return 0


#: What marks a folder as holding a run of `depthdistill train`.
_RUN_RECORDS = ("config.yaml", "metrics.jsonl", "results.json", "*/last.pt", "*/model.pt")


def _refuse_existing_run(out_dir: Path) -> None:
    """Refuses to start a new run over the records of another one."""
    found = sorted({str(p.relative_to(out_dir)) for pattern in _RUN_RECORDS for p in out_dir.glob(pattern)})
    if found:
        listed = ", ".join(found[:4]) + (" …" if len(found) > 4 else "")
        raise ConfigError(f"{out_dir} already holds a run ({listed}); continue it with --resume, or start this "
                          "one elsewhere with --out-dir DIR")


class _ConfigWriter:
    """A training callback writing config.yaml once, when the first epoch starts: a run that fails before it
    trains leaves no records, and a refused resume leaves the run's records as they were."""

    def __init__(self, cfg: Any) -> None:
        self.cfg, self.written = cfg, False

    def __call__(self, state: Any) -> None:
        import yaml

        from depthdistill.engine.distributed import is_main_process

        if self.written or state.event != "epoch_start":
            return
        self.written = True
        if is_main_process():
            out = Path(self.cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------- evaluate
@command("evaluate", help="test a checkpoint: mPA, mIoU, pixel accuracy", arguments=[
    arg("--checkpoint", required=True, help="model.pt / best.pt / last.pt written by `depthdistill train`"),
    arg("--config", metavar="RUN.yaml", help="take the data section from this run file (default: the one the "
                                             "checkpoint was trained with)"),
    arg("--data", metavar="NAME", help="dataset instead: synthetic, nyuv2, sunrgbd, folder or package.module:Class"),
    arg("--data-arg", metavar="KEY=VALUE", action="append", default=[],
        help="constructor argument of --data (repeatable), e.g. --data-arg root=/data/nyuv2"),
    arg("--split", default="test", help="split to evaluate (default: test)"),
    arg("--batch-size", type=int, default=1, help="samples per forward (default: 1)"),
    arg("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)"),
    arg("--json", metavar="FILE", help="also write the metrics (with per-class IoU and the confusion matrix) here"),
    *_MODEL_ARGS,
])
def _evaluate(args: argparse.Namespace) -> int:
    """Evaluates a checkpoint on a whole split from one confusion matrix.

    A teacher checkpoint is evaluated on RGB-D (the data must have depth), a student or baseline on RGB.
    The data comes from --data/--data-arg, else from --config's data section, else from the run file stored
    in the checkpoint.
    """
    import json

    from depthdistill.distill.config import DataConfig, RunConfig, load_config
    from depthdistill.engine.evaluate import evaluate

    model, meta = _checkpoint_model(args)
    if args.data:
        data_cfg = DataConfig(name=args.data, args=_key_values(args.data_arg, "--data-arg"))
    elif args.config:
        data_cfg = load_config(args.config).data
    elif meta.get("config"):
        data_cfg = RunConfig.from_dict(meta["config"]).data
    else:
        raise ConfigError("say which data to evaluate on: --data NAME [--data-arg KEY=VALUE …] or --config RUN.yaml")
    data = _dataset(data_cfg, {"split": args.split})
    _feed_like_training(data, meta)
    metrics = evaluate(model, data, meta["num_classes"], ignore_index=meta.get("ignore_index", VOID),
                       device=args.device,
                       batch_size=args.batch_size)
    rgb_d = "RGB-D" if meta.get("depth_aware_layers") else "RGB"
    print(f"{args.checkpoint} ({meta.get('phase')}, {rgb_d}) on {data_cfg.name}/{args.split}: "
          f"mPA {100 * metrics['mean_pixel_accuracy']:.2f}  mIoU {100 * metrics['mean_iou']:.2f}  "
          f"pixel accuracy {100 * metrics['pixel_accuracy']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
    return 0


def _feed_like_training(data: Any, meta: dict[str, Any]) -> None:
    """Gives ``data`` the RGB normalisation the checkpoint was trained with (recorded by every phase), when it
    applies none; refuses data normalised otherwise. Checkpoints that record nothing are taken as they are."""
    from depthdistill.data import Compose, Normalize, rgb_normalization

    if "rgb_normalization" not in meta:
        return
    trained, given = meta["rgb_normalization"], rgb_normalization(data)
    if given == trained or (given is not None and trained is not None
                            and all(abs(a - b) < 1e-6 for x, y in zip(given, trained) for a, b in zip(x, y))):
        return
    if given is None and hasattr(data, "transform"):
        data.transform = Normalize(*trained) if data.transform is None else Compose([data.transform,
                                                                                      Normalize(*trained)])
        print(f"depthdistill: normalising RGB as in training (mean {trained[0]}, std {trained[1]})", file=sys.stderr)
        return
    raise ConfigError(f"the data's RGB normalisation {given} is not the one the checkpoint was trained with "
                      f"({trained}; None: RGB in 0..1): the metrics would be silently wrong. Evaluate on data "
                      "prepared as in training (--data-arg transform=eval, or no transform)")


# ----------------------------------------------------------------------------------------------- predict
@command("predict", help="segment RGB images with a student; write colour masks and overlays", arguments=[
    arg("--checkpoint", required=True, help="a student (or baseline) checkpoint, e.g. <out_dir>/sn/model.pt"),
    arg("images", nargs="+", metavar="IMAGE", help="RGB image files (any format Pillow reads)"),
    arg("--out", required=True, metavar="DIR", help="output folder"),
    arg("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)"),
    arg("--opacity", type=float, default=0.5, help="mask opacity in the overlay, 0..1 (default: 0.5)"),
    *_MODEL_ARGS,
])
def _predict(args: argparse.Namespace) -> int:
    """Segments each image (RGB only, no depth) and writes, per image, into --out:
    NAME_label.png (class index per pixel, 8-bit), NAME_mask.png (colour mask, in the training set's palette
    when the checkpoint recorded one, else depthdistill.viz.label_palette) and NAME_overlay.png (the mask blended
    over the image). Images are scaled to [0, 1] and normalised like the training data
    when the checkpoint records its normalisation.
    """
    from depthdistill.inference import iter_predict

    if not 0.0 <= args.opacity <= 1.0:
        raise ConfigError(f"--opacity must be in 0..1, got {args.opacity}")
    out = Path(args.out)
    predictions = iter_predict(args.checkpoint, args.images, out, device=args.device, opacity=args.opacity,
                               model_spec=_model_spec(args))
    for image, prediction in zip(args.images, predictions, strict=True):  # printed as each one is written
        print(f"{Path(image)} -> {out / prediction.name}_{{label,mask,overlay}}.png")
    return 0


# ------------------------------------------------------------------------------------------------ export
@command("export", help="export a student to ONNX or TorchScript and check it matches PyTorch", arguments=[
    arg("--checkpoint", required=True, help="a student (or baseline) checkpoint, e.g. <out_dir>/sn/model.pt"),
    arg("--format", required=True, choices=["onnx", "torchscript"], help="onnx or torchscript"),
    arg("--out", metavar="FILE", help="output file (default: next to the checkpoint, student.onnx / student.ts.pt)"),
    arg("--height", type=int, default=64, help="height of the example input used to trace (default: 64)"),
    arg("--width", type=int, default=64, help="width of the example input used to trace (default: 64)"),
    arg("--opset", type=int, help="ONNX opset version (default: the exporter's)"),
    arg("--atol", type=float, default=1e-4, help="largest allowed difference to PyTorch's logits (default: 1e-4)"),
    *_MODEL_ARGS,
])
def _export(args: argparse.Namespace) -> int:
    """Exports the plain student (RGB in, logits out) and runs the exported model on a random image of the
    given size to check that its logits match PyTorch's within --atol; exits with an error otherwise.
    A depth-aware teacher cannot be exported (it needs depth through a context): export a student.
    The ONNX export uses torch's dynamo exporter (packages onnx, onnxscript) and checks with onnxruntime.
    """
    from depthdistill.deploy import export

    result = export(args.checkpoint, args.format, args.out, height=args.height, width=args.width, opset=args.opset,
                    atol=args.atol, model_spec=_model_spec(args))
    print(f"exported {result.path} ({result.format}); logits match PyTorch on batches of 1 and 2 (max difference "
          f"{result.max_difference:.2e})")
    return 0


# -------------------------------------------------------------------------------------------------- demo
@command("demo", help="the default method end to end on built-in synthetic data with unlabelled frames: an RGB "
                      "model trained to convergence, then BL, TN, SN and its control from it",
         arguments=[
             arg("--out", default="runs/demo", help="output folder (default: runs/demo)"),
             arg("--quick", action="store_true", help="a smoke run of seconds instead of minutes"),
             arg("--removal", action="store_true",
                 help="the paper's depth removal instead (no unlabelled frames), with its ablations and controls"),
             arg("--seed", type=int, default=0, help="seed of the data and of every phase (default: 0)"),
             arg("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)"),
         ])
def _demo(args: argparse.Namespace) -> int:
    """Trains a slim DeepLab-VGG16 on the built-in synthetic RGB-D scenes, labelled and unlabelled: first on RGB to
    convergence (start), then from start's weights as the baselines (BL, BL@TN), the depth-aware teacher (TN), the
    default method's RGB student (SN: it also learns from TN's targets on the unlabelled frames) and its control
    without depth (SN-RGB); with --removal, from the initialisation, the paper's depth removal, its ablations
    BL+VTCE and BL+PS, TN→RGB and BL@TN+PS. Tests every row (TN on RGB-D, the others on
    RGB) and prints the table in the paper's form. Writes results.json, metrics.jsonl, figures (training curves,
    per-class IoU, sample grid; the VTCE temperature with --removal) and report.md / report.html to --out.
    """
    from depthdistill.demo import run_demo

    table = run_demo(args.out, quick=args.quick, removal=args.removal, seed=args.seed, device=args.device)
    print(table.to_markdown())
    print(f"\ntotal {table.info['total_seconds']} s; results, figures and report in {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------- prepare
@command("prepare", help="export NYUv2 or SUN RGB-D from the official files to the fast RGBDFolder layout",
         arguments=[
             arg("dataset", choices=["nyuv2", "sunrgbd"], metavar="DATASET", help="nyuv2 or sunrgbd"),
             arg("--root", required=True, help="folder with the official files (see docs/data.md)"),
             arg("--out", required=True, help="root of the folder dataset to write"),
             arg("--num-classes", type=int, default=40, help="NYUv2 label set: 13, 40 or 894 (default 40)"),
             arg("--raw-depth", action="store_true", help="export the raw sensor depth with its holes"),
         ])
def _prepare(args: argparse.Namespace) -> int:
    """Reads every train and test image of the official release once and writes {out}/{train,test}/{rgb,depth,
    label}/ (PNG RGB, 16-bit depth PNG in millimetres, label PNG with 255 = void), which RGBDFolder reads back
    far faster than the .mat files.
    """
    from depthdistill.data.prepare import prepare_dataset

    for split in ("train", "test"):  # one at a time, so each line is printed as soon as its split is written
        written = prepare_dataset(args.dataset, args.root, args.out, splits=split, num_classes=args.num_classes,
                                  raw_depth=args.raw_depth)
        print(f"{args.dataset} {split}: {written[split]} samples written to {Path(args.out) / split}")
    return 0
