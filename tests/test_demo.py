"""The embedded demo: runs with no data of its own and reports an honest accuracy."""

import re

import pytest
from astropy.io import fits

from astro_offsets import OffsetMap
from astro_offsets._cli import main
from astro_offsets._demo import DEMO_SHAPE


@pytest.mark.slow
def test_demo_command(tmp_path, capsys):
    outdir = tmp_path / "demo"
    assert main(["demo", "--outdir", str(outdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["frames", "tables", "maps", "stack"]
    assert lines[4].startswith("done in ")
    # Of 900 stars, those matched with SNR >= 30 are kept: a few hundred.
    kept = re.search(r"(\d+) to (\d+) stars with SNR >= 30 kept", lines[1])
    fewest, most = map(int, kept.groups())
    assert 100 < fewest <= most < 400
    # The fitted fields auto chose beat the exact quadrant field of the same
    # tables (0.023 against 0.072 px RMS when last run).
    rms, quadrant_rms = (float(part.split(" px")[0]) for part in lines[2].split("RMS ")[1:])
    assert 0 < rms < 0.05
    assert rms < 0.6 * quadrant_rms
    assert "chosen by cross-validation (polynomial degree=" in lines[2]
    light = outdir / "light"
    frames = sorted(light.glob("DEMO*.dng"))
    assert len(frames) == 5
    assert len(sorted(light.glob("DEMO*.offsets_table.fits"))) == 4
    maps = sorted(light.glob("DEMO*.offsets.fits"))
    assert len(maps) == 4
    assert OffsetMap.read(maps[0]).shape == DEMO_SHAPE
    assert (light / "DEMO0004.offsets.png").exists()
    with fits.open(outdir / "stack.fits") as hdul:
        assert hdul[0].header["NFRAMES"] == 5
        # Colour as the file's one image, a cube of 3 planes, as Siril and
        # PixInsight open it; its weights beside it.
        assert [h.name for h in hdul] == ["PRIMARY", "FRAMES"]
        assert hdul[0].shape == (3, *DEMO_SHAPE)
    with fits.open(outdir / "stack.weights.fits") as hdul:
        assert hdul["WHT"].shape == (3, *DEMO_SHAPE)
    assert (outdir / "stack.png").exists()
