"""The upscale progress: an estimate before the first tile, a bar that moves inside a tile, the time left."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from cli import progress
from cli.progress import Estimate, TileProgress, estimate, record_speed, slow_notice
from gpu_batch.engine.engine import Engine


def _estimate(**changes: object) -> Estimate:
    values: dict[str, object] = {"network": "x4plus", "provider": "CPUExecutionProvider", "tiles": 1,
                                 "pixels_per_tile": 66_576, "seconds_per_pixel": 6e-4, "measured": False}
    values.update(changes)
    return Estimate(**values)  # type: ignore[arg-type]


def test_a_slow_cpu_run_is_announced_with_its_estimate() -> None:
    found = _estimate()
    assert round(found.seconds) == 40
    notice = slow_notice(found, model="x4plus", width=256, height=171)
    assert notice is not None and "No CUDA GPU" in notice and "256x171 (1 tile) takes about 40 s" in notice
    assert "first guess" in notice
    assert "measured here" in str(slow_notice(_estimate(measured=True), model="x4plus", width=256, height=171))
    assert slow_notice(_estimate(seconds_per_pixel=1e-6), model="x4plus", width=256, height=171) is None
    assert slow_notice(_estimate(provider="CUDAExecutionProvider"), model="x4plus", width=256, height=171) is None


def test_the_bar_moves_inside_a_single_tile_by_the_clock_and_counts_down() -> None:
    found = _estimate(seconds_per_pixel=1e-4)  # ~6.7 s per tile
    bar = TileProgress("photo.jpg", found, console=Console(file=io.StringIO()))
    try:
        bar(0, 1)
        start = bar._tile_started
        assert bar.fraction_done(start) == 0
        halfway = start + found.seconds_per_tile / 2
        assert bar.fraction_done(halfway) == pytest.approx(0.5, abs=0.01)
        assert bar.left_seconds(halfway) == pytest.approx(found.seconds_per_tile / 2, rel=0.01)
        assert bar.fraction_done(start + 10 * found.seconds_per_tile) < 1  # only the engine finishes a tile
        bar(1, 1)
        assert bar.fraction_done(start) == 1
    finally:
        bar.stop()


def test_later_runs_start_from_the_speed_measured_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine = Engine(device="cpu")
    first = estimate(engine, model="animevideov3", scale=4, width=64, height=48)
    assert not first.measured and first.tiles == 1 and first.seconds > 0
    record_speed(first, 2.0)
    again = estimate(engine, model="animevideov3", scale=4, width=64, height=48)
    assert again.measured and again.seconds == pytest.approx(2.0)
    assert progress.speed_cache().is_file()


def test_multiply_adds_are_counted_from_the_graph() -> None:
    heavy, light = progress.macs_per_pixel("x4plus"), progress.macs_per_pixel("animevideov3")
    assert heavy > 10 * light > 0  # RRDBNet 23 blocks against the compact SRVGGNet
