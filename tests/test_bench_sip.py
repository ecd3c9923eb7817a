"""benchmarks/bench_sip.py runs, and the error to_sip records is the one measured again."""

import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_sip.py"


def load():
    pytest.importorskip("sep")  # bench_pipeline's, whose sequence it reuses
    spec = importlib.util.spec_from_file_location("bench_sip", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorded_error_is_the_measured_one(capsys):
    figures = load().main(["--size", "400x300", "--frames", "3"])
    printed = capsys.readouterr().out
    assert "recorded vs measured" in printed
    assert len(figures["degrees"]) == 2
    for recorded, measured in zip(figures["recorded"], figures["measured"], strict=True):
        assert recorded == pytest.approx(measured, abs=1e-9)
        assert recorded <= 0.01  # auto's polynomial fields: SIP follows them
