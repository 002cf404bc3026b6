"""A timm backbone (features_only) with a small segmentation head, distilled.

    python examples/timm_backbone.py --backbone convnext_atto --root /data/my_rgbd
    python examples/timm_backbone.py --synthetic

timm layers that override forward (Conv2dSame in tf_* models, StdConv2d in BiT models) keep their behaviour in the
teacher: only their convolution becomes depth-aware. Pretrained weights only with --pretrained (downloaded by timm).
"""

from _common import distill, folder_or_synthetic, parser

from depthdistill.models import TimmSegmenter


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--backbone", default="resnet18", help="any timm model with features_only (default resnet18)")
    p.add_argument("--pretrained", action="store_true", help="timm's pretrained weights (downloads them)")
    p.add_argument("--root", help="an RGBDFolder root ({root}/{train,test}/{rgb,depth,label}/)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes of the folder dataset")
    args = p.parse_args()
    train, test, num_classes = folder_or_synthetic(args, (320, 320))
    model = TimmSegmenter(args.backbone, num_classes, pretrained=args.pretrained)
    distill(model, num_classes, train, test, args, f"timm_{args.backbone}", teacher_epochs=1, student_epochs=1,
            model_name=f"timm:{args.backbone}", batch_size=4, lr=1e-3)


if __name__ == "__main__":
    main()
