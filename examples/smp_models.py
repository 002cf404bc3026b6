"""An segmentation_models_pytorch model (Unet, DeepLabV3Plus, FPN, … with the encoder of your choice), distilled.

    python examples/smp_models.py --arch DeepLabV3Plus --encoder resnet34 --root /data/my_rgbd
    python examples/smp_models.py --synthetic

The encoder's BatchNorm layers are untouched; every spatial convolution (encoder and decoder) becomes depth-aware
in the teacher. ImageNet encoder weights are used only with --encoder-weights imagenet (downloaded by smp).
"""

from _common import distill, folder_or_synthetic, parser

from depthdistill.models import smp_model


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--arch", default="Unet", help="smp architecture: Unet, DeepLabV3Plus, FPN, … (default Unet)")
    p.add_argument("--encoder", default="resnet18", help="smp encoder name (default resnet18)")
    p.add_argument("--encoder-weights", default=None, help="e.g. imagenet (default: none, random init)")
    p.add_argument("--root", help="an RGBDFolder root ({root}/{train,test}/{rgb,depth,label}/)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes of the folder dataset")
    args = p.parse_args()
    train, test, num_classes = folder_or_synthetic(args, (320, 320))
    model = smp_model(args.arch, args.encoder, num_classes, encoder_weights=args.encoder_weights)
    distill(model, num_classes, train, test, args, f"smp_{args.arch}_{args.encoder}", teacher_epochs=1,
            student_epochs=1, model_name=f"smp:{args.arch}/{args.encoder}", batch_size=4, lr=1e-3)


if __name__ == "__main__":
    main()
