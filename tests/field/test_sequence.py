"""The field chosen once per sequence: SequenceChoice, and write_maps's default."""

import pickle

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import OffsetMap, OffsetModel, SequenceChoice, write_maps
from astro_offsets._cli import main
from astro_offsets.datasets import CameraMotion, LocalDistortion, star_offsets
from astro_offsets.field import SEQUENCE_SELECTION, _cross_validation

SHAPE = (300, 450)
N_FRAMES = 6


def motion(k):
    """Frame ``k``'s motion: a drift and a turn through a barrel lens (polynomial degree 2)."""
    return CameraMotion(
        SHAPE,
        drift=(20.0 * k, -12.0 * k),
        rotation_deg=0.05 * k,
        pole=(-500.0, 2000.0),
        barrel=2e-7,
    )


def stars(k, field=None, n=200):
    x, y, dx, dy, _ = star_offsets(np.random.default_rng(k), field or motion(k), SHAPE, n)
    return Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy})


def apart(k):
    """Frame ``k`` with a local bump no polynomial follows."""
    return stars(k, LocalDistortion(motion(k), (270.0, 120.0), 30.0, (1.5, -1.0)))


def grid_values(model):
    py, px = np.mgrid[0 : SHAPE[0] : 7, 0 : SHAPE[1] : 7]
    return np.stack(model(px, py))


@pytest.fixture(scope="module")
def choice():
    return SequenceChoice.from_model(OffsetModel.from_table(stars(1), method="auto"))


def test_the_choice_is_auto_on_the_first_frame(choice):
    first = OffsetModel.from_table(stars(1), method="auto")
    assert (choice.method, choice.parameters) == ("polynomial", {"degree": 2})
    assert (choice.trend, choice.clip, choice.cv_rms) == ("affine", 3.0, first.cv_rms)


def test_a_frame_that_agrees_keeps_the_choice(choice):
    table = stars(3)
    model = choice.model(table, source="frame3")
    fixed = OffsetModel.from_table(table, method="polynomial", degree=2)
    auto = OffsetModel.from_table(table, method="auto")
    assert model.meta["selection"] == SEQUENCE_SELECTION == "auto, sequence"
    assert model.meta["source"] == "frame3"
    assert repr(model).endswith("polynomial degree=2 (auto, sequence), 1 clipped>")
    # The same field as the method given, and as the frame's own auto here.
    assert np.array_equal(grid_values(model), grid_values(fixed))
    assert (auto.method, auto.parameters) == (model.method, model.parameters)
    # Its CV RMS is known from the re-check: auto's table's, for the same field.
    row = auto.cross_validate()["parameters"] == "degree=2"
    assert model.cv_rms == pytest.approx(float(auto.cross_validate()["cv_rms"][row][0]), abs=0)
    assert model.to_map(SHAPE).meta["cv_rms"] == model.cv_rms


def test_a_frame_whose_stars_disagree_chooses_its_own(choice):
    # A local bump: the quadrant field beats the polynomial on these stars,
    # and the frame's own auto takes a thin-plate spline.
    table = apart(4)
    model = choice.model(table)
    auto = OffsetModel.from_table(table, method="auto")
    assert model.meta["selection"] == "auto"
    assert (
        (model.method, model.parameters)
        == (auto.method, auto.parameters)
        != (
            choice.method,
            choice.parameters,
        )
    )
    assert np.array_equal(grid_values(model), grid_values(auto))


@pytest.mark.parametrize("n", [3, 12])
def test_a_frame_with_few_stars_chooses_its_own(choice, n):
    # Too few stars for the polynomial's folds: auto on the frame, as before.
    table = stars(5, n=n)
    model = choice.model(table)
    auto = OffsetModel.from_table(table, method="auto")
    assert model.meta["selection"] == "auto"
    assert (model.method, model.parameters) == (auto.method, auto.parameters)


def test_a_frame_depends_on_the_choice_and_its_table_alone(choice):
    # As in another process (the choice pickles), in another order.
    tables = [stars(k) for k in range(2, N_FRAMES + 1)] + [apart(4)]
    here = [grid_values(choice.model(t)) for t in tables]
    travelled = pickle.loads(pickle.dumps(choice))
    assert travelled == choice
    there = [grid_values(travelled.model(t)) for t in reversed(tables)][::-1]
    for a, b in zip(here, there, strict=True):
        assert np.array_equal(a, b)


def test_from_model_refuses_a_field_not_chosen_by_auto():
    with pytest.raises(ValueError, match="no field chosen by cross-validation"):
        SequenceChoice.from_model(OffsetModel.from_table(stars(1), method="polynomial"))
    with pytest.raises(ValueError, match="F1: no field chosen"):
        SequenceChoice.from_model(OffsetModel.from_table(stars(1, n=1), method="auto", source="F1"))


@pytest.fixture
def tables(tmp_path):
    paths = []
    for k in range(1, N_FRAMES + 1):
        path = tmp_path / f"F{k}.offsets_table.fits"
        (apart(k) if k == 4 else stars(k)).write(path)
        paths.append(str(path))
    return paths


def test_write_maps_chooses_once_per_sequence(tables, tmp_path, monkeypatch):
    # The candidate fields cross-validated, by method.
    counted = []
    held_out = _cross_validation._held_out_residuals

    def counting(method, *args):
        counted.append(method.name)
        return held_out(method, *args)

    monkeypatch.setattr(_cross_validation, "_held_out_residuals", counting)
    runs, counts = {}, {}
    for choose in ("frame", "sequence"):
        (tmp_path / choose).mkdir()
        counted.clear()
        runs[choose] = write_maps(tables, SHAPE, outdir=tmp_path / choose, choose=choose)
        counts[choose] = {name: counted.count(name) for name in set(counted)}
    # Each table's auto cross-validates 4 thin-plate splines (each an
    # O(n**3) solve); the sequence's, on the first table and on the one
    # apart, which chooses its own.
    assert counts["frame"]["thin-plate"] == 4 * N_FRAMES
    assert counts["sequence"]["thin-plate"] == 4 * 2
    selected = {
        choose: [fits.getheader(r.output)["SELECTED"] for r in results]
        for choose, results in runs.items()
    }
    assert selected["frame"] == ["auto"] * N_FRAMES
    assert (
        selected["sequence"]
        == ["auto"] + [SEQUENCE_SELECTION] * 2 + ["auto"] + [SEQUENCE_SELECTION] * 2
    )
    assert "(auto, sequence), CV RMS" in runs["sequence"][1].field
    # Here every frame's own auto chooses what the sequence did: the same maps.
    for a, b in zip(runs["frame"], runs["sequence"], strict=True):
        assert np.array_equal(OffsetMap.read(a.output).x_offset, OffsetMap.read(b.output).x_offset)
        assert fits.getheader(a.output)["CVRMS"] == fits.getheader(b.output)["CVRMS"]


def test_write_maps_sequence_choice_whatever_n_jobs(tables, tmp_path):
    maps = {}
    for n_jobs in (1, 2):
        (tmp_path / str(n_jobs)).mkdir()
        results = write_maps(tables, SHAPE, outdir=tmp_path / str(n_jobs), n_jobs=n_jobs)
        maps[n_jobs] = [OffsetMap.read(r.output) for r in results]
    for a, b in zip(maps[1], maps[2], strict=True):
        assert np.array_equal(a.x_offset, b.x_offset)
        assert np.array_equal(a.y_offset, b.y_offset)
        assert a.meta["selection"] == b.meta["selection"]


def test_the_first_table_that_can_choose_chooses(tmp_path):
    # The first table cannot be read, the second has one star: the third chooses.
    (tmp_path / "F0.offsets_table.fits").write_text("not a table")
    stars(1, n=1).write(tmp_path / "F1.offsets_table.fits")
    for k in (2, 3):
        stars(k).write(tmp_path / f"F{k}.offsets_table.fits")
    names = [str(tmp_path / f"F{k}.offsets_table.fits") for k in range(4)]
    results = write_maps(names, SHAPE)
    assert [r.status for r in results] == ["failed", "written", "written", "written"]
    selected = [fits.getheader(r.output).get("SELECTED") for r in results[1:]]
    assert selected == [None, "auto", SEQUENCE_SELECTION]  # one star: the quadrant field


def test_a_sequence_choice_that_folds_gives_way_to_the_quadrant_field(tmp_path):
    # The stars of tests/maps/test_folds.py, twice: the second table keeps
    # the first's choice, degree 6, which folds in the empty corners.
    shape = (1200, 1800)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 600, 200), rng.uniform(0, 400, 200)
    u, v = (x - 300) / 300, (y - 200) / 300
    dx = 1 + 0.5 * u**6 - 0.3 * u**3 * v**2 + rng.normal(0, 0.01, 200)
    dy = -1 + 0.4 * v**5 * u + rng.normal(0, 0.01, 200)
    names = [str(tmp_path / f"F{k}.offsets_table.ecsv") for k in (1, 2)]
    for name in names:
        Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy}).write(name)
    [first, second] = write_maps(names, shape)
    assert second.status == "written"
    assert second.warnings[0].endswith("the quadrant field on the trend is used instead")
    omap = OffsetMap.read(second.output)
    assert omap.folds() is None
    assert (omap.meta["method"], omap.meta["selection"]) == ("quadrant", "auto, quadrant: fold")
    assert np.array_equal(omap.x_offset, OffsetMap.read(first.output).x_offset)


def test_write_maps_refuses_an_unknown_choose(tables):
    with pytest.raises(ValueError, match="choose must be one of 'sequence', 'frame', got 'x'"):
        write_maps(tables, SHAPE, choose="x")


def test_the_maps_command_chooses_per_frame_if_asked(tables, tmp_path):
    for choose, expected in (
        ("frame", ["auto", "auto"]),
        ("sequence", ["auto", SEQUENCE_SELECTION]),
    ):
        outdir = tmp_path / choose
        outdir.mkdir()
        argv = [*tables[:2], "--shape", *map(str, SHAPE), "--outdir", str(outdir)]
        assert main(["maps", *argv, "--choose", choose]) == 0
        selected = [fits.getheader(outdir / f"F{k}.offsets.fits")["SELECTED"] for k in (1, 2)]
        assert selected == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("auto", 1, "affine", 3.0), "method must be one of 'quadrant', 'polynomial'"),
        (("polynomial", 11, "affine", 3.0), r"degree must be an integer in \[0, 10\], got 11"),
        (("polynomial", 3, "bogus", 3.0), "trend must be one of"),
        (("quadrant", 1.0, "affine", -1.0), "clip"),
    ],
)
def test_a_choice_checks_its_options(arguments, message):
    with pytest.raises(ValueError, match=message):
        SequenceChoice(*arguments)
