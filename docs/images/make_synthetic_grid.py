"""Draws docs/images/synthetic_grid.png (or, with --realistic, synthetic_grid_realistic.png): six samples of
``SyntheticRGBD(size=(96, 128), seed=0)`` as RGB | depth (turbo, 0.5-9 m, white = hole) | label, legend below.

    python docs/images/make_synthetic_grid.py [--realistic]
"""

import argparse
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from depthdistill.data import SyntheticRGBD
from depthdistill.viz import colorize, depth_to_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realistic", action="store_true", help="draw SyntheticRGBD(realistic=True)")
    args = parser.parse_args()
    ds = SyntheticRGBD(num_samples=6, size=(96, 128), seed=0, realistic=args.realistic)
    fig = Figure(figsize=(6.0, 9.0), layout="constrained")
    axes = fig.subplots(len(ds), 3, squeeze=False)
    for row in range(len(ds)):
        sample = ds[row]
        images = [sample["rgb"].permute(1, 2, 0).numpy(), depth_to_image(sample["depth"], 0.5, 9.0, cmap="turbo"),
                  colorize(sample["label"], ds.palette)]
        for col, image in enumerate(images):
            axes[row, col].imshow(image, interpolation="nearest")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(("RGB", "depth (m)", "label")[col], fontsize="medium")
    handles = [Patch(color=colour / 255, label=name) for name, colour in zip(ds.class_names, ds.palette)]
    handles.append(Patch(color="black", label="void"))
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize="small")
    name = "synthetic_grid_realistic.png" if args.realistic else "synthetic_grid.png"
    fig.savefig(Path(__file__).with_name(name), dpi=100)


if __name__ == "__main__":
    main()
