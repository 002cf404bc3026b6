"""The paper's setup: DeepLab-VGG16 (LargeFOV) on NYUv2 from the official files, teacher → student, a Table-1 row.

    python examples/deeplab_vgg16_nyuv2.py --root /data/nyuv2 --init imagenet   # the paper's "Initialization" row
    python examples/deeplab_vgg16_nyuv2.py --root /data/nyuv2 --init none       # trained from scratch
    python examples/deeplab_vgg16_nyuv2.py --synthetic                          # a smoke run, no files needed

--root holds nyu_depth_v2_labeled.mat, splits.mat and classMapping40.mat (see docs/data.md for where to get them).
Defaults are the paper's: 40 classes, 795 / 654 images, lr 2.5e-4, batch 1, α = 8.3, β = 0.9,
the ``"paper"`` preset (every spatial convolution depth-aware, nearest depth, no depth dropout; ``--preset default``
tries the settings that measured better in docs/fidelity.md); SGD momentum 0.9, weight decay 5e-4 and the poly
schedule are DeepLab's conventions, which the paper does not restate.
"""

from _common import distill, parser, synthetic_splits

from depthdistill.models import deeplab_vgg16


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--root", help="folder with the official NYUv2 files")
    p.add_argument("--num-classes", type=int, default=40, choices=[13, 40], help="NYUv2 label set (default 40)")
    p.add_argument("--init", default="none",
                   help="'none' (from scratch), 'imagenet' (torchvision's VGG16 weights; downloaded by torchvision "
                        "once) or the path of a local torchvision VGG16 state_dict")
    p.add_argument("--crop", type=int, nargs=2, default=(480, 640), metavar=("H", "W"), help="training crop")
    p.add_argument("--lr", type=float, default=2.5e-4, help="learning rate (the paper: 2.5e-4)")
    p.add_argument("--batch-size", type=int, default=1, help="images per step (the paper: 1)")
    p.set_defaults(preset="paper")  # this example reproduces the paper; --preset default tries ours
    args = p.parse_args()
    if args.synthetic:
        train, test = synthetic_splits()
        model = deeplab_vgg16(train.num_classes, width=0.0625)
        distill(model, train.num_classes, train, test, args, "deeplab_vgg16_synthetic",
                teacher_epochs=1, student_epochs=1, model_name="deeplab_vgg16", model_args={"width": 0.0625},
                batch_size=4, lr=1e-3)
        return
    if not args.root:
        p.error("--root is required (or --synthetic for a smoke run)")
    from depthdistill.data import NYUv2, eval_transforms, train_transforms

    train = NYUv2(args.root, split="train", num_classes=args.num_classes, transform=train_transforms(tuple(args.crop)))
    test = NYUv2(args.root, split="test", num_classes=args.num_classes, transform=eval_transforms())
    pretrained = {"none": False, "imagenet": True}.get(args.init, args.init)
    model = deeplab_vgg16(args.num_classes, pretrained_backbone=pretrained)
    distill(model, args.num_classes, train, test, args, f"deeplab_vgg16_nyuv2_{args.num_classes}",
            teacher_epochs=50, student_epochs=25, model_name="deeplab_vgg16", batch_size=args.batch_size, lr=args.lr)


if __name__ == "__main__":
    main()
