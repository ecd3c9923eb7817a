"""A vignetted Bayer raw sequence through tables, maps and stack, with and without its flat."""

import numpy as np
import pytest

from astro_offsets import Stack
from astro_offsets._cli import main
from astro_offsets.datasets import CameraMotion, observe, star_field, vignetting, write_dng

SHAPE = (240, 360)
BLACK = 512
# The colours' responses: a red and a blue filter pass less of a grey sky.
RESPONSE = {(0, 0): 0.6, (0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.75}


def response():
    gain = np.empty(SHAPE)
    for (oy, ox), value in RESPONSE.items():
        gain[oy::2, ox::2] = value
    return gain


def write_raw(path, image):
    write_dng(path, np.clip(image + BLACK, 0, 16383).astype(np.uint16), black_level=BLACK)
    return str(path)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """Three vignetted lights (15 % in the corners) of a moving star field, and five flats."""
    folder = tmp_path_factory.mktemp("raw")
    (folder / "flats").mkdir()
    rng = np.random.default_rng(21)
    x, y, flux = star_field(rng, 260, SHAPE, faintest=3000.0)
    light = vignetting(SHAPE, corner=0.85) * response()
    frames = []
    for k in range(3):
        motion = CameraMotion(SHAPE, drift=(3.3 * k, -2.1 * k), rotation_deg=0.1 * k, barrel=0.0)
        fx, fy = motion.to_frame(x, y) if k else (x, y)
        sky = observe(rng, SHAPE, fx, fy, flux, sigma=1.8, sky=800.0, read_noise=5.0)
        frames.append(write_raw(folder / f"IMG_{k}.dng", sky * light))
    for k in range(5):
        flat = 12000.0 * light
        write_raw(folder / "flats" / f"FLAT_{k}.dng", flat + rng.normal(0, np.sqrt(flat)))
    return folder, frames


def corner_loss(path):
    """The sky's fall-off from the centre to the corners of each channel of a stack."""
    losses = {}
    stack = Stack.read(path)
    for name in stack.channels:
        image = stack.images[name]
        ny, nx = image.shape
        b = 24
        centre = np.nanmedian(image[ny // 2 - b : ny // 2 + b, nx // 2 - b : nx // 2 + b])
        corners = [
            np.nanmedian(image[sy, sx])
            for sy in (slice(8, 8 + b), slice(ny - 8 - b, ny - 8))
            for sx in (slice(8, 8 + b), slice(nx - 8 - b, nx - 8))
        ]
        losses[name] = 1 - np.mean(corners) / centre
    return losses


@pytest.mark.slow
def test_flat_takes_out_the_vignetting(sequence, capsys):
    folder, frames = sequence
    flats = str(folder / "flats")
    assert main(["tables", *frames, "--reference", frames[0], "--flat", flats]) == 0
    tables = [str(folder / f"IMG_{k}.offsets_table.fits") for k in (1, 2)]
    assert main(["maps", *tables, "--image", frames[0]]) == 0
    assert main(["stack", *frames, "--out", str(folder / "flat.fits"), "--flat", flats]) == 0
    assert main(["stack", *frames, "--out", str(folder / "raw.fits")]) == 0
    capsys.readouterr()
    with_flat, without = corner_loss(folder / "flat.fits"), corner_loss(folder / "raw.fits")
    # The corners' loss is that of the flat field of the sensor (sky and
    # vignetting alike) less the light the corners' pixels receive.
    for name in with_flat:
        assert without[name] > 0.1, (name, without)
        assert abs(with_flat[name]) < 0.01, (name, with_flat)
    # The master flat is kept beside the flats, and is no frame of a stack.
    masters = [p.name for p in (folder / "flats").iterdir() if p.name.startswith("astro_offsets")]
    assert len(masters) == 1
