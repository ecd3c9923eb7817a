"""Make the README's picture from the demo: ``python docs/readme_figure.py``.

Runs ``astro-offsets demo`` in a temporary directory and puts side by side a
crop of the colour stack and the offset map of the last frame with its
stars, into ``docs/_static/readme.png``.
"""

import os
import tempfile

import matplotlib.image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from astro_offsets import OffsetMap, OffsetModel
from astro_offsets._demo import run_demo

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with tempfile.TemporaryDirectory() as folder:
        result = run_demo(folder)
        stack = matplotlib.image.imread(os.path.join(folder, "stack.png"))
        omap = OffsetMap.read(result["maps"][-1])
        model = OffsetModel.read(result["tables"][-1])
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    left.imshow(stack[450:1050, 750:1650])
    left.set_title("Bayer drizzle of 5 raw frames (crop)")
    left.set_axis_off()
    image = middle.imshow(omap.x_offset, origin="lower", cmap="viridis")
    figure.colorbar(image, ax=middle, shrink=0.8, label="pixels")
    middle.set_title("X offset map of the last frame")
    u = model.x_offset - model.x_offset.mean()
    v = model.y_offset - model.y_offset.mean()
    right.quiver(model.x, model.y, u, v, angles="xy", color="tab:blue", width=0.004)
    right.set_aspect("equal")
    right.set_xlim(0, omap.shape[1])
    right.set_ylim(0, omap.shape[0])
    right.set_title(f"its {len(model)} stars: offsets minus the mean")
    figure.suptitle(
        f"astro-offsets demo: maps within {result['rms']:.3f} px RMS of the true "
        "motion (drift, field rotation, lens distortion)"
    )
    figure.savefig(os.path.join(HERE, "_static", "readme.png"), dpi=72)


if __name__ == "__main__":
    main()
