"""benchmarks/bench_rejection.py runs, and one pass in the output grid is drizzle's own sum."""

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.slow

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_rejection.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_rejection", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_pass_is_exact_and_every_scheme_is_measured(tmp_path, capsys):
    bench = load()
    arguments = ["--size", "400x300", "--frames", "5", "--repeat", "1", "--jobs", "1"]
    figures = bench.main([*arguments, "--folder", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "Exactness" in printed
    # Nothing rejected: the weighted mean of the single drizzles is the drizzle stack.
    assert figures["exact"]["image"] < 16
    assert figures["exact"]["weight"] < 16
    assert figures["exact"]["cover"]
    measures = figures["measures"]
    assert measures["no rejection"]["trail"] > 3
    for scheme in ("two-pass (today)", "one-pass, winsorized", "one-pass, median"):
        assert abs(measures[scheme]["trail"]) < 1, scheme
        assert measures[scheme]["rays"] < 5, scheme
    assert measures["one-pass, none"]["rays"] == 100
