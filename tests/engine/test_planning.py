"""The tile planner: a pure function of the image's size, the memory budget and the network."""

from __future__ import annotations

import pytest

from gpu_batch.engine.planning import (
    CPU_MAX_TILE,
    FEATURE_CHANNELS,
    MAX_TENSOR_ELEMENTS,
    grid_plan,
    plan_tiles,
    tile_pad,
    window_bytes_per_pixel,
)
from gpu_batch.engine.tiling import tile_spots

GIB = 1 << 30
# What runtime.load_runner plans with on a 24 GB GPU (A10G, L4) and an 80 GB one (H100): 0.8 of what is free.
A10G_BUDGET, H100_BUDGET = int(23.4 * GIB * 0.8), int(79.4 * GIB * 0.8)
SIZES = {"1MP": (1155, 866), "4MP": (2309, 1732), "12MP": (4000, 3000)}


@pytest.mark.parametrize("budget", [A10G_BUDGET, H100_BUDGET])
@pytest.mark.parametrize("size", list(SIZES))
def test_forward_work_stays_within_15_percent_of_the_image_on_a_gpu(size, budget) -> None:
    width, height = SIZES[size]
    plan = plan_tiles(width, height, network="x4plus", memory_budget=budget)
    assert plan.work_ratio(width, height) <= 1.15
    # the windows cover the image and fit the budget and the CUDA kernels' index range, batch included
    pixels = plan.window_h * plan.window_w
    assert plan.batch * pixels * window_bytes_per_pixel("x4plus", "cuda") <= budget
    assert plan.batch * pixels * FEATURE_CHANNELS * 16 <= MAX_TENSOR_ELEMENTS
    assert plan.rows * plan.tile_h >= height and plan.cols * plan.tile_w >= width


def test_a_1_mp_photo_is_one_window_when_it_fits() -> None:
    plan = plan_tiles(1155, 866, network="x4plus", memory_budget=A10G_BUDGET)
    assert plan.windows == 1 and (plan.window_h, plan.window_w) == (866 + 48, 1155 + 48)  # the 24 px border
    small = plan_tiles(1155, 866, network="x4plus", memory_budget=2 * GIB)  # a small GPU: more windows
    assert small.windows > 1 and small.window_h * small.window_w * window_bytes_per_pixel("x4plus", "cuda") <= 2 * GIB


def test_the_old_fixed_1024_tiles_did_more_work() -> None:
    """The issue's figures for fixed 1024 px tiles (1.88x at 1 MP, 1.78x at 4 MP) against the planner's."""
    for width, height in SIZES.values():
        fixed = plan_tiles(width, height, network="x4plus", memory_budget=A10G_BUDGET, tile_size=1024)
        planned = plan_tiles(width, height, network="x4plus", memory_budget=A10G_BUDGET)
        assert planned.work < fixed.work
    fixed_1mp = plan_tiles(*SIZES["1MP"], network="x4plus", memory_budget=A10G_BUDGET, tile_size=1024)
    assert fixed_1mp.work_ratio(*SIZES["1MP"]) > 1.8


def test_equal_windows_batch_together_up_to_the_memory() -> None:
    plan = plan_tiles(600, 600, network="animevideov3", memory_budget=A10G_BUDGET, tile_size=128)
    assert plan.windows == 25 and plan.batch == 8  # one shape for every window, so any of them batch
    tight = plan_tiles(600, 600, network="animevideov3", memory_budget=3 * 176 * 176 * 1000, tile_size=128)
    assert tight.batch == 3


def test_cpu_plans_keep_windows_small_and_within_the_budget() -> None:
    plan = plan_tiles(4000, 3000, network="x4plus", memory_budget=6 * GIB, device="cpu")
    assert plan.batch == 1 and max(plan.window_h, plan.window_w) <= CPU_MAX_TILE + 2 * tile_pad("x4plus")
    tight = plan_tiles(4000, 3000, network="x4plus", memory_budget=GIB // 2, device="cpu")
    assert tight.window_h * tight.window_w * window_bytes_per_pixel("x4plus", "cpu") <= GIB // 2


def test_nothing_fits_gives_the_smallest_tiles() -> None:
    plan = plan_tiles(500, 400, network="x4plus", memory_budget=1, device="cuda")
    assert (plan.tile_h, plan.tile_w, plan.batch) == (32, 32, 1)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (31, 700), (1155, 866), (16384, 3)])
def test_plans_cover_any_shape_with_one_window_shape(width, height) -> None:
    plan = plan_tiles(width, height, network="animevideov3", memory_budget=A10G_BUDGET)
    spots = tile_spots(height, width, plan.tile_h, plan.tile_w)
    assert len(spots) == plan.windows
    assert max(s.y for s in spots) + plan.tile_h == height and max(s.x for s in spots) + plan.tile_w == width
    assert grid_plan(width, height, plan.tile_h, plan.tile_w, pad=24, border=16).windows == plan.windows
