"""depthdistill inside a training loop of your own: the teacher, the switch and the student in plain PyTorch.

    python examples/own_training_loop.py --synthetic      # a smoke run on built-in synthetic scenes

The loop below is what `Distiller.train` does for the default method, written out: the same building blocks
(`convert_teacher`, `drop_depth`, `frozen_copy`, `convert_to_plain`, the settings' student loss) and the same
seeding and data order, so from the same initial weights it trains the same student as the Distiller (a test
checks it). What the Distiller adds on top: data checks before and during training, checkpoints every epoch and
resume, NaN detection, AMP, gradient accumulation, DDP, the metrics log, the baseline and control rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import depthdistill
from depthdistill.distill import DistillSettings, convert_teacher, drop_depth, frozen_copy
from depthdistill.engine import (
    evaluate,
    move_batch,
    poly_schedule,
    save_checkpoint,
    seed_everything,
    sgd,
    start_epoch,
    train_loader,
)
from depthdistill.engine.checkpoint import CHECKPOINT_FORMAT
from depthdistill.labels import VOID


def _epochs(model: nn.Module, data, epochs: int, loss_of, *, lr: float, batch_size: int, seed: int,
            device: torch.device, lr_scale: float = 1.0) -> None:
    """Your loop: SGD with poly decay, the data order a function of (seed, epoch), ``loss_of(model, batch, epoch)``."""
    loader = train_loader(data, batch_size=batch_size, seed=seed)
    optimizer = sgd(lr * lr_scale)([p for p in model.parameters() if p.requires_grad])
    schedule = poly_schedule()(optimizer, epochs * len(loader))
    seed_everything(seed)  # each phase starts from the same random state, as the Distiller's do
    for epoch in range(epochs):
        model.train()
        start_epoch(loader, epoch, seed)
        for batch in loader:
            batch = move_batch(batch, device, channels_last=False)
            loss = loss_of(model, batch, epoch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()


def teacher_then_student(model: nn.Module, data, *, teacher_epochs: int, student_epochs: int,
                         settings: DistillSettings | str = "default", lr: float = 2.5e-4, batch_size: int = 1,
                         seed: int = 0, device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    """Trains ``model`` as the depth-aware teacher, then (the same Parameter objects) as the plain student.

    Returns:
        ``(student, frozen teacher)``: the student is ``model`` itself, plain again.
    """
    s = DistillSettings.from_preset(settings) if isinstance(settings, str) else settings
    dev = torch.device(device)
    model.to(dev)

    # 1. The teacher: the settings' layers made depth-aware in place, depth reaching them through the context.
    teacher = convert_teacher(model, s)

    def teacher_loss(net, batch, epoch):
        with depthdistill.depth_context(drop_depth(batch["depth"], s.depth_dropout)):
            logits = net(batch["rgb"])
        return F.cross_entropy(logits.float(), batch["label"], ignore_index=VOID)

    _epochs(teacher, data, teacher_epochs, teacher_loss, lr=lr, batch_size=batch_size, seed=seed, device=dev)

    # 2. The switch: a frozen copy gives the soft targets; the live model becomes the plain student in place.
    frozen = frozen_copy(teacher)
    student = depthdistill.convert_to_plain(teacher)

    # 3. The student: RGB in, the library's loss (CE + VTCE by default) against the frozen teacher fed RGB-D.
    student_loss = s.build_student_loss(VOID)

    def distilled_loss(net, batch, epoch):
        with torch.no_grad(), depthdistill.depth_context(batch["depth"]):
            targets = frozen(batch["rgb"])
        return student_loss(net(batch["rgb"]).float(), targets.float(), batch["label"], epoch)["loss"]

    _epochs(student, data, student_epochs, distilled_loss, lr=lr, batch_size=batch_size, seed=seed, device=dev,
            lr_scale=s.student_lr_scale)
    return student, frozen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="run on a few built-in synthetic scenes")
    parser.add_argument("--out", default="runs/own_training_loop", help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if not args.synthetic:
        parser.error("this example trains on --synthetic scenes; put your own data and model in its place")
    from depthdistill.data import SyntheticRGBD, eval_transforms, rgb_normalization, train_transforms
    from depthdistill.models import deeplab_vgg16

    size = (32, 48)
    train = SyntheticRGBD(num_samples=8, size=size, split="train",
                          transform=train_transforms(size, scale_range=None, color_jitter=0.0))
    test = SyntheticRGBD(num_samples=4, size=size, split="test", transform=eval_transforms())
    torch.manual_seed(0)
    model = deeplab_vgg16(train.num_classes, width=0.0625)
    student, teacher = teacher_then_student(model, train, teacher_epochs=1, student_epochs=1, lr=1e-3,
                                            batch_size=4, device=args.device)
    for name, net in (("teacher (RGB-D)", teacher), ("student (RGB)", student)):
        metrics = evaluate(net, test, train.num_classes, device=args.device)
        print(f"{name}: mIoU {100 * metrics['mean_iou']:.1f} %")
    out = Path(args.out)
    # An atomic, checksummed file that `depthdistill evaluate / predict / export` read (the model named for them).
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": student.state_dict(), "epoch": 1, "epochs": 1,
                     "phase": "sn", "meta": {"model": {"name": "deeplab_vgg16", "args": {"width": 0.0625}},
                                             "num_classes": train.num_classes, "depth_aware_layers": [],
                                             "rgb_normalization": rgb_normalization(train)}},
                    out / "sn" / "model.pt")
    print(f"the student is {out / 'sn' / 'model.pt'}")


if __name__ == "__main__":
    main()
