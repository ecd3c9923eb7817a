"""The stack's FITS file: as one image or as extensions, the FRAMES table, reading it back."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import Stack, Stacker
from astro_offsets._utils.provenance import product_kind
from astro_offsets.stack import LAYOUTS, Normalisation
from astro_offsets.stack._report import frame_report

SHAPE = (12, 16)


def made(bayer, n_frames=3, *, context=True, files=True):
    """A small stack of ``n_frames``; with ``files``, the meta of `stack_frames` too."""
    rng = np.random.default_rng(7)
    shape = (3, *SHAPE) if bayer else SHAPE
    with Stacker(SHAPE, bayer=bayer, context=context) as stacker:
        for k in range(n_frames):
            stacker.add(
                rng.normal(100.0, 5.0, shape).astype(np.float32),
                exptime=30.0,
                name=f"light/IMG_{k:03d}.fits",
            )
        stack = stacker.stack()
        stack = stack._replace(
            images={name: np.array(image) for name, image in stack.images.items()},
            weights={name: np.array(weight) for name, weight in stack.weights.items()},
            contexts=None
            if stack.contexts is None
            else {name: np.array(ctx) for name, ctx in stack.contexts.items()},
        )
    # No pixel reached in a corner: NaN there.
    for name in stack.channels:
        stack.images[name][0, :3] = np.nan
        stack.weights[name][0, :3] = 0.0
    if not files:
        return stack
    channels = len(stack.channels)
    meta = {
        **stack.meta,
        "maps": [None] + [f"maps/IMG_{k:03d}.offsets.fits" for k in range(1, n_frames)],
        "normalised": True,
        "rejected": True,
        "weighting": "noise",
        "normalisation": [
            Normalisation(1.0, (0.0,) * channels, "reference", (800.0,) * channels),
            *(
                Normalisation(
                    1.0 + 0.01 * k,
                    tuple(-1.5 * k - c for c in range(channels)),
                    "stars",
                    tuple(801.25 + k + c for c in range(channels)),
                )
                for k in range(1, n_frames)
            ),
        ],
        "masked": [0.0, *(0.001 * k for k in range(1, n_frames))],
        "weights": [1.0, *(0.9**k for k in range(1, n_frames))],
    }
    return stack._replace(meta=meta)


def assert_same(got, expected):
    assert got.channels == expected.channels
    for kind in ("images", "weights", "contexts"):
        arrays = getattr(expected, kind)
        if arrays is None:
            assert getattr(got, kind) is None
            continue
        for name in expected.channels:
            one, other = getattr(got, kind)[name], arrays[name]
            assert one.dtype == other.dtype
            assert np.array_equal(one, other, equal_nan=True), (kind, name)
    assert got.meta == expected.meta


def image_hdus(hdul):
    return [hdu.name for hdu in hdul if hdu.is_image and hdu.header["NAXIS"] > 0]


def test_colour_stack_is_one_image_by_default(tmp_path):
    # Siril 1.4 takes a FITS file of more than one image for a sequence: the
    # stack is the file's one image, its weights in a file beside it.
    stack = made(bayer=True)
    stack.write(tmp_path / "stack.fits")
    with fits.open(tmp_path / "stack.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "FRAMES"]
        header = hdul[0].header
        assert (header["NAXIS"], header["NAXIS3"], header["BITPIX"]) == (3, 3, -32)
        assert header["PRODUCT"] == "stack"
        assert header["BUNIT"] == "adu / s"
        cube = hdul[0].data
        assert cube.shape == (3, *SHAPE)
        for plane, name in enumerate(("RED", "GREEN", "BLUE")):
            assert np.array_equal(cube[plane], stack.images[name], equal_nan=True)
    with fits.open(tmp_path / "stack.weights.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "WHT"]
        assert hdul[0].header["NAXIS"] == 0
        assert hdul[0].header["PRODUCT"] == "stack weights"
        assert hdul[0].header["STACK"] == "stack.fits"
        weights = hdul["WHT"].data
        assert weights.shape == (3, *SHAPE)
        for plane, name in enumerate(("RED", "GREEN", "BLUE")):
            assert np.array_equal(weights[plane], stack.weights[name])
    assert product_kind(tmp_path / "stack.weights.fits") == "stack weights"
    stack.write(tmp_path / "context.fits", context=True)
    with fits.open(tmp_path / "context.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "FRAMES"]
    with fits.open(tmp_path / "context.weights.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "WHT", "CTX"]
        assert hdul["CTX"].shape == (3, 1, *SHAPE)


def test_extensions_layout_on_request(tmp_path):
    stack = made(bayer=True)
    stack.write(tmp_path / "stack.fits", layout="extensions", context=True)
    with fits.open(tmp_path / "stack.fits") as hdul:
        assert [hdu.name for hdu in hdul] == [
            "PRIMARY",
            *("RED", "GREEN", "BLUE"),
            *("RED_WHT", "GREEN_WHT", "BLUE_WHT"),
            *("RED_CTX", "GREEN_CTX", "BLUE_CTX"),
            "FRAMES",
        ]
        assert hdul[0].header["NAXIS"] == 0
        assert hdul["RED"].header["BUNIT"] == "adu / s"
        assert np.array_equal(hdul["BLUE"].data, stack.images["BLUE"], equal_nan=True)
    assert not os.path.exists(tmp_path / "stack.weights.fits")
    with pytest.raises(ValueError, match="unknown layout 'rgb'; expected one of"):
        stack.write(tmp_path / "other.fits", layout="rgb")
    with pytest.raises(ValueError, match="unknown layout 'cube'; expected one of"):
        stack.write(tmp_path / "other.fits", layout="cube")


def test_mono_stack_is_sci_and_wht_by_default(tmp_path):
    stack = made(bayer=False)
    for layout in (None, "extensions"):
        stack.write(tmp_path / f"{layout}.fits", layout=layout)
        with fits.open(tmp_path / f"{layout}.fits") as hdul:
            assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "WHT", "FRAMES"]
        assert not os.path.exists(tmp_path / f"{layout}.weights.fits")
        assert stack.weights_file(tmp_path / f"{layout}.fits", layout) is None


def test_mono_stack_as_one_image(tmp_path):
    stack = made(bayer=False)
    stack.write(tmp_path / "stack.fits", layout="image", context=True)
    with fits.open(tmp_path / "stack.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "FRAMES"]
        assert hdul[0].header["PRODUCT"] == "stack"
        assert np.array_equal(hdul[0].data, stack.images["SCI"], equal_nan=True)
    with fits.open(tmp_path / "stack.weights.fits") as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "WHT", "CTX"]
        assert np.array_equal(hdul["WHT"].data, stack.weights["SCI"])
        assert hdul["CTX"].shape == (1, *SHAPE)
    assert stack.weights_file(tmp_path / "stack.fits", "image") == str(
        tmp_path / "stack.weights.fits"
    )


def test_weights_file_is_an_output_as_the_stack_is(tmp_path):
    stack = made(bayer=True)
    out, weights = tmp_path / "stack.fits", tmp_path / "stack.weights.fits"
    weights.write_bytes(b"theirs")
    message = f"{weights}: already exists (use overwrite to replace it)"
    with pytest.raises(FileExistsError, match=re.escape(message)):
        stack.write(out)
    # Nothing written: neither the stack, nor the weights.
    assert not out.exists()
    assert weights.read_bytes() == b"theirs"
    stack.write(out, overwrite=True)
    assert Stack.read(out).channels == ("RED", "GREEN", "BLUE")
    with pytest.raises(FileExistsError, match=re.escape(f"{out}: already exists")):
        stack.write(out)
    # A stack written and its weights file since removed: one clear error.
    weights.unlink()
    message = f"{out}: its weights file {weights} is missing"
    with pytest.raises(ValueError, match=re.escape(message)):
        Stack.read(out)
    # Another stack's weights, not these.
    made(bayer=False).write(tmp_path / "mono.fits", layout="image")
    os.replace(tmp_path / "mono.weights.fits", weights)
    message = f"{weights}: WHT of shape {SHAPE}: not the weights of {out}, an image of (3, "
    with pytest.raises(ValueError, match=re.escape(message)):
        Stack.read(out)


@pytest.mark.parametrize(
    ("bayer", "layout"),
    [(False, None), (False, "image"), (True, None), (True, "extensions")],
    ids=str,
)
@pytest.mark.parametrize("context", [False, True])
def test_read_gives_back_what_was_written(tmp_path, bayer, layout, context):
    stack = made(bayer)
    stack.write(tmp_path / "stack.fits", layout=layout, context=context)
    expected = stack if context else stack._replace(contexts=None)
    assert_same(Stack.read(tmp_path / "stack.fits"), expected)
    # A stack of a Stacker alone: no normalisation, weights nor rejection.
    plain = made(bayer, files=False)
    plain.write(tmp_path / "plain.fits", layout=layout, context=context)
    expected = plain if context else plain._replace(contexts=None)
    assert_same(Stack.read(tmp_path / "plain.fits"), expected)


@pytest.mark.parametrize("context", [False, True])
def test_read_cube_with_its_weights_inside(tmp_path, context):
    # As the cube was written before its weights went beside it: the
    # primary cube, then WHT and CTX, then FRAMES, in one file.
    stack = made(bayer=True)
    stack.write(tmp_path / "new.fits", context=context)
    with (
        fits.open(tmp_path / "new.fits") as hdul,
        fits.open(tmp_path / "new.weights.fits") as weights,
    ):
        hdus = [hdul[0], *weights[1:], hdul["FRAMES"]]
        fits.HDUList(hdus).writeto(tmp_path / "old.fits")
    with fits.open(tmp_path / "old.fits") as hdul:
        names = ["PRIMARY", "WHT", "CTX", "FRAMES"] if context else ["PRIMARY", "WHT", "FRAMES"]
        assert [hdu.name for hdu in hdul] == names
    assert_same(
        Stack.read(tmp_path / "old.fits"), stack if context else stack._replace(contexts=None)
    )


def test_frames_table_has_a_row_per_frame(tmp_path):
    stack = made(bayer=True)
    stack.write(tmp_path / "stack.fits")
    table = Table.read(tmp_path / "stack.fits", hdu="FRAMES")
    assert table.colnames == [
        "frame",
        "map",
        "kernel",
        "used",
        "weight",
        "flux_scale",
        "scale_source",
        "sky",
        "sky_offset",
        "rejected",
    ]
    assert table["frame"].tolist() == stack.meta["frames"]
    assert table["map"].tolist() == ["", "maps/IMG_001.offsets.fits", "maps/IMG_002.offsets.fits"]
    assert table["kernel"].tolist() == stack.meta["kernels"]
    assert table["used"].tolist() == [True] * 3
    assert table["weight"].tolist() == [1.0, 0.9, 0.81]
    assert table["flux_scale"].tolist() == [1.0, 1.01, 1.02]
    assert table["scale_source"].tolist() == ["reference", "stars", "stars"]
    assert table["sky_offset"].tolist() == [[0.0, 0.0, 0.0], [-1.5, -2.5, -3.5], [-3, -4, -5]]
    assert table["sky"][2].tolist() == [803.25, 804.25, 805.25]
    assert table["rejected"].tolist() == [0.0, 0.001, 0.002]
    # The names the frame report gives the same measures.
    report = frame_report([]).colnames
    assert {"frame", "used", "weight", "flux_scale", "sky"} <= set(report)
    # Mono: a value per frame, not a vector of one.
    made(bayer=False).write(tmp_path / "mono.fits")
    mono = Table.read(tmp_path / "mono.fits", hdu="FRAMES")
    assert mono["sky_offset"].shape == mono["sky"].shape == (3,)


def test_header_of_300_frames_stays_small(tmp_path):
    small, large = made(False, 3, context=False), made(False, 300, context=False)
    small.write(tmp_path / "small.fits")
    large.write(tmp_path / "large.fits")
    header = fits.getheader(tmp_path / "large.fits")
    assert header["NFRAMES"] == 300
    # The frames are in the table: the header does not grow with them.
    assert len(header) == len(fits.getheader(tmp_path / "small.fits"))
    assert len(header) < 60
    assert len(Table.read(tmp_path / "large.fits", hdu="FRAMES")) == 300
    assert Stack.read(tmp_path / "large.fits").meta == large.meta


def test_read_stack_of_an_earlier_version(tmp_path):
    # Before the FRAMES table: the frames and maps in cards of the primary header.
    stack = made(bayer=True, files=False)
    header = fits.Header([("PRODUCT", "stack"), ("KERNEL", "square"), ("NFRAMES", 2)])
    header["FRM00001"], header["MAP00001"] = "a.fits", "(reference)"
    header["FRM00002"], header["MAP00002"] = "b.fits", "b.offsets.fits"
    hdus = [fits.PrimaryHDU(header=header)]
    hdus += [fits.ImageHDU(stack.images[name], name=name) for name in stack.channels]
    hdus += [fits.ImageHDU(stack.weights[name], name=f"{name}_WHT") for name in stack.channels]
    fits.HDUList(hdus).writeto(tmp_path / "old.fits")
    old = Stack.read(tmp_path / "old.fits")
    assert old.meta["frames"] == ["a.fits", "b.fits"]
    assert old.meta["maps"] == [None, "b.offsets.fits"]
    assert old.meta["kernel"] == "square"
    assert np.array_equal(old.images["GREEN"], stack.images["GREEN"], equal_nan=True)
    assert old.contexts is None


def test_read_refuses_what_is_no_stack(tmp_path):
    fits.HDUList([fits.PrimaryHDU(np.zeros(SHAPE, np.float32))]).writeto(tmp_path / "frame.fits")
    message = (
        "frame.fits: not a stack: no SCI or RED extension, nor a stack's image in the primary "
        "HDU (a 3-plane cube, or PRODUCT = 'stack')"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        Stack.read(tmp_path / "frame.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(SHAPE), name="SCI")]).writeto(
        tmp_path / "half.fits"
    )
    with pytest.raises(ValueError, match=r"half.fits: a stack without its weights \(WHT\)"):
        Stack.read(tmp_path / "half.fits")


def siril_layers(stdout):
    """Return the layers that Siril's ``stat`` printed: ``["Red layer", ...]``."""
    layers = [line for line in stdout.splitlines() if " layer: Mean" in line]
    return [line.split("log: ")[1].split(":")[0] for line in layers]


@pytest.mark.skipif(shutil.which("siril-cli") is None, reason="Siril is not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_siril_opens_the_cube_as_colour(tmp_path, layout):
    made(bayer=True).write(tmp_path / "stack.fit", layout=layout, context=True)
    # Siril 1.0 reads a libconfig file; its default extension is .fit.
    (tmp_path / "siril.config").write_text('misc-settings :\n{\n  extension = ".fit";\n};\n')
    (tmp_path / "open.ssf").write_text("requires 1.0.0\nload stack.fit\nstat\n")
    command = ["siril-cli", "-i", "siril.config", "-d", str(tmp_path), "-s", "open.ssf"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if layout == "image":
        assert siril_layers(done.stdout) == ["Red layer", "Green layer", "Blue layer"]
    else:  # the red plane alone, as a grey image
        assert siril_layers(done.stdout) == ["B&W layer"]


SIRIL_14 = "/tmp/s14bin/siril14-cli"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SIRIL_14), reason="Siril 1.4 is not installed")
def test_siril_14_opens_a_stack_written_as_one_image(tmp_path):
    # Siril 1.4 takes a FITS file of more than one image for a (deprecated)
    # film sequence, and crashes on it; one image and a table it opens.
    made(bayer=True).write(tmp_path / "colour.fits", context=True)
    made(bayer=False).write(tmp_path / "mono.fits", layout="image", context=True)
    script = ["requires 1.2.0", f"cd {tmp_path}", "setext fits"]
    script += ["load colour", "stat", "load mono", "stat"]
    (tmp_path / "open.ssf").write_text("\n".join(script) + "\n")
    command = [SIRIL_14, "-s", str(tmp_path / "open.ssf")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert siril_layers(done.stdout) == ["Red layer", "Green layer", "Blue layer", "B&W layer"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_a_few_rows_at_a_time_is_written_whole(tmp_path, monkeypatch, layout):
    from astro_offsets.stack import _product

    monkeypatch.setattr(_product, "_CHUNK", 80)  # 5 rows of 16 at a time, 2 left over
    stack = made(bayer=True, n_frames=2)
    stack.write(tmp_path / "stack.fits", layout=layout, context=True)
    assert_same(Stack.read(tmp_path / "stack.fits"), stack)
