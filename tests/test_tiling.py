import numpy as np
import pytest

from edge_deblur.tiling import plan_axis, plan_tiles, run_tiled


@pytest.mark.parametrize("length", [17, 100, 480, 500, 640, 1000, 1920, 4000])
@pytest.mark.parametrize("fixed", [False, True])
def test_axis_plan_covers_with_aligned_windows_and_unit_weights(length, fixed):
    tile, overlap, multiple = 256, 32, 16
    plan = plan_axis(length, tile, overlap, multiple, fixed)
    assert plan.padded >= length and plan.padded % multiple == 0
    assert plan.window <= tile and (plan.window == tile or not fixed)
    assert all(s % multiple == 0 for s in plan.starts)
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.window == plan.padded
    for a, b in zip(plan.starts, plan.starts[1:]):
        assert a + plan.window - b >= overlap
    total = np.zeros(plan.padded)
    for s, w in zip(plan.starts, plan.weights):
        total[s : s + plan.window] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_each_pixel_comes_from_windows_where_it_is_away_from_inner_edges():
    plan = plan_axis(1000, 256, 64, 16, False)
    for i, (s, w) in enumerate(zip(plan.starts, plan.weights)):
        # weight is zero within a quarter of the overlap (16 px) of an inner edge
        if i > 0:
            assert np.all(w[:16] == 0)
        if i < len(plan.starts) - 1:
            assert np.all(w[-16:] == 0)


def test_resizable_windows_share_the_frame_evenly():
    # 640x480 with 512 tiles: two 336-wide windows, not a 512 and a mostly-overlapping second one
    plan = plan_tiles(480, 640, 512, 32, 16)
    assert plan.count == 2
    assert plan.pixels_processed / (640 * 480) < 1.06


def test_run_tiled_reproduces_a_pointwise_function_exactly(photo):
    x = photo.astype(np.float32) / 255
    plan = plan_tiles(*x.shape[:2], tile=128, overlap=32, multiple=16)
    assert plan.count > 1
    out = run_tiled(x, plan, lambda t: t**2)
    np.testing.assert_allclose(out, x**2, atol=1e-6)


def test_bad_tile_settings_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        plan_axis(500, 100, 16, 16, False)
    with pytest.raises(ValueError, match="overlap"):
        plan_axis(500, 128, 128, 16, False)
