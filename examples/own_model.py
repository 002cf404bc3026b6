"""Your own segmenter, distilled: the ten lines, then the same through the Distiller.

Any nn.Module that maps an image batch (B,3,H,W) to logits (B,C,H,W) works unchanged.

    python examples/own_model.py --synthetic
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from _common import distill, folder_or_synthetic, parser

import depthdistill
from depthdistill.data import collate_rgbd


class MySegmenter(nn.Module):
    """A small encoder-decoder: nothing about it knows depth."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(32, num_classes, 1)

    def forward(self, x):
        return F.interpolate(self.head(self.encoder(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def by_hand(model: nn.Module, batch: dict) -> nn.Module:
    """The method in ten lines, one step each (the Distiller adds epochs, VTCE's schedule, checkpoints …)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    teacher = depthdistill.convert_to_depth_aware(model)                        # 1. same weights, D-Conv layers
    with depthdistill.depth_context(batch["depth"]):                            # 2. depth reaches every D-Conv
        F.cross_entropy(teacher(batch["rgb"]), batch["label"], ignore_index=255).backward()   # 3. teacher: CE on RGB-D
    opt.step(), opt.zero_grad()
    with torch.no_grad(), depthdistill.depth_context(batch["depth"]):
        soft = teacher(batch["rgb"])                                             # 4. the teacher's soft targets
    student = depthdistill.convert_to_plain(teacher)                            # 5. same Parameter objects, plain convs
    logits = student(batch["rgb"])                                               # 6. RGB only
    loss = F.cross_entropy(logits, batch["label"], ignore_index=255) + depthdistill.vtce_loss(
        logits, soft, depthdistill.vtce_temperature(0), mask=batch["label"] != 255)   # 7. CE + VTCE
    loss.backward(), opt.step()                                                  # 8. the student learns
    return student                                                               # 9. plain model: save, export, deploy


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--root", help="an RGBDFolder root ({root}/{train,test}/{rgb,depth,label}/)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of your data (folder datasets)")
    args = p.parse_args()
    train, test, num_classes = folder_or_synthetic(args, (240, 320), synthetic_size=(32, 48))
    student = by_hand(MySegmenter(num_classes), collate_rgbd([train[0], train[1]]))
    assert not depthdistill.list_depth_aware(student)
    distill(MySegmenter(num_classes), num_classes, train, test, args, "own_model", teacher_epochs=2, student_epochs=1,
            model_name="own_model:MySegmenter", batch_size=4, lr=1e-3,
            optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))


if __name__ == "__main__":
    main()
