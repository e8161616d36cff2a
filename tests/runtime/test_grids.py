"""A bundle's own DDIM grid: the segment spec, its manifest record, and when the sampler uses it."""

import numpy as np
import pytest

from edgediff.runtime import grids
from edgediff.runtime.errors import InputError
from edgediff.runtime.generate import SampleRequest, for_bundle, grid_label


def test_segments_place_their_steps_from_hi_down_toward_lo():
    ts = grids.from_spec("99-60:4, 60-0:6", 100)
    assert ts.tolist() == [99, 89, 80, 70, 60, 50, 40, 30, 20, 10]
    assert ts.dtype == np.int64
    rec = grids.record("99-60:4,60-0:6", 100, "why not")
    assert rec == {"steps": 10, "timesteps": ts.tolist(), "spec": "99-60:4,60-0:6", "why": "why not"}
    assert grids.problem(rec, 100) is None


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    ("99-60", "not HI-LO:K"),
    ("99-60:4;60-0:6", "not HI-LO:K"),
    ("100-60:4", "out of range"),
    ("60-99:4", "out of range"),
    ("99-60:0", "out of range"),
    ("99-60:4,50-0:6", "does not start where"),
    ("99-95:10", "two steps on one timestep"),
])
def test_a_bad_spec_is_refused_with_its_fix(spec, words):
    with pytest.raises(InputError, match=words):
        grids.from_spec(spec, 100)


@pytest.mark.parametrize("bad", [
    [], {"steps": 3, "timesteps": [9, 5]}, {"steps": 2, "timesteps": [5, 9]}, {"steps": 2, "timesteps": [100, 5]},
    {"steps": 2, "timesteps": [9.0, 5]}, {"steps": True, "timesteps": [9]}, {"steps": 1, "timesteps": [9], "spec": 3},
])
def test_a_bad_record_is_named(bad):
    assert grids.problem(bad, 100)


SAMPLING = grids.record("99-60:4,60-0:6", 100)


def test_the_bundle_grid_is_the_default_only_where_the_request_leaves_it_open():
    req, grid = for_bundle(SampleRequest(n=4), None, SAMPLING)
    assert grid.tolist() == SAMPLING["timesteps"] and req.steps == 10 and req.eta == 1.0
    assert grid_label(req, grid) == "the bundle's own grid"
    again, grid2 = for_bundle(req, None, SAMPLING)  # the CLI and generate() both pass a request through
    assert again == req and grid2.tolist() == grid.tolist()
    assert for_bundle(SampleRequest(n=4, steps=10), None, SAMPLING)[1] is not None
    for other in (SampleRequest(n=4, spacing="trailing"), SampleRequest(n=4, steps=20),
                  SampleRequest(n=4, method="dpmpp2m"), SampleRequest(n=4, method="ddpm")):
        req, grid = for_bundle(other, None, SAMPLING)
        assert grid is None and req.spacing == (other.spacing or "trailing")
    req, grid = for_bundle(SampleRequest(n=4), None, None)
    assert grid is None and req.spacing == "trailing" and grid_label(req, grid) == "trailing"


GIVEN = tuple(grids.from_spec("99-40:3,40-0:5", 100).tolist())


@pytest.mark.parametrize("method", ["ddim", "dpmpp2m", "sde-dpmpp2m", "unipc"])
def test_a_given_grid_places_any_samplers_steps_over_the_bundles_own(method):
    req, grid = for_bundle(SampleRequest(n=4, method=method, grid=GIVEN), None, SAMPLING)
    assert grid.tolist() == list(GIVEN) and req.steps == 8 and req.eta == 1.0 and req.spacing is None
    assert grid_label(req, grid) == "the given grid"
    again, grid2 = for_bundle(req, None, SAMPLING)
    assert again == req and grid2.tolist() == list(GIVEN)
    req.check(100, 16)


@pytest.mark.parametrize("req, distilled, words", [
    (SampleRequest(n=4, grid=GIVEN), {"nfe": 4, "timesteps": [99, 75, 50, 25]}, "distilled for its own 4 timesteps"),
    (SampleRequest(n=4, method="ddpm", grid=GIVEN), None, "DDPM runs every one"),
    (SampleRequest(n=4, spacing="leading", grid=GIVEN), None, "both place the steps"),
    (SampleRequest(n=4, steps=10, grid=GIVEN), None, "--steps 10 and --grid's 8 steps disagree"),
])
def test_a_given_grid_that_cannot_apply_is_refused(req, distilled, words):
    with pytest.raises(InputError, match=words):
        for_bundle(req, distilled, SAMPLING)


@pytest.mark.parametrize("grid", [(), (100, 5), (5, 9), (9, 9, 1)])
def test_a_given_grid_outside_the_schedule_is_refused_before_any_work(grid):
    with pytest.raises(InputError, match="strictly decreasing integers in"):
        SampleRequest(n=4, method="sde-dpmpp2m", steps=len(grid) or None, grid=grid).check(100, 16)


def test_the_sampler_walks_the_given_grid(unet_bundle):
    """Every step's Tweedie estimate is kept: the timesteps the SDE solver visited are the grid's."""
    pytest.importorskip("onnxruntime")
    from edgediff.runtime import load
    from edgediff.runtime.generate import generate

    d = load(unet_bundle, backend="ort")
    run = generate(d, SampleRequest(n=3, method="sde-dpmpp2m", grid=GIVEN, seed=2, tweedie_every=1))
    assert run.nfe == 8 and run.tweedie_t.tolist() == list(GIVEN)
    uniform = generate(d, SampleRequest(n=3, method="sde-dpmpp2m", steps=8, seed=2, tweedie_every=1))
    assert uniform.tweedie_t.tolist() != list(GIVEN) and not np.allclose(uniform.x, run.x)
    again = generate(d, SampleRequest(n=3, method="sde-dpmpp2m", grid=GIVEN, seed=2))
    np.testing.assert_array_equal(again.x, run.x)


SDE_OWN = grids.record("99-60:4,60-0:6", 100, "", "sde-dpmpp2m")


def test_a_grid_that_names_a_solver_makes_it_the_default_on_the_grid():
    assert SDE_OWN["method"] == "sde-dpmpp2m" and "method" not in SAMPLING and grids.problem(SDE_OWN, 100) is None
    req, grid = for_bundle(SampleRequest(n=4), None, SDE_OWN)
    assert req.method == "sde-dpmpp2m" and req.steps == 10 and grid.tolist() == SDE_OWN["timesteps"]
    again, grid2 = for_bundle(req, None, SDE_OWN)  # the CLI and generate() both pass a request through
    assert again == req and grid2.tolist() == grid.tolist()
    for other in (SampleRequest(n=4, method="ddim"), SampleRequest(n=4, method="sde-dpmpp2m", steps=20),
                  SampleRequest(n=4, spacing="trailing")):
        req, grid = for_bundle(other, None, SDE_OWN)
        assert grid is None and req.spacing == "trailing" and req.method == (other.method or "sde-dpmpp2m")
    assert for_bundle(SampleRequest(n=4), None, None)[0].method == "ddim"
    req, grid = for_bundle(SampleRequest(n=4, eta=0.0), None, SDE_OWN)  # --eta alone: DDIM's knob, so DDIM
    assert req.method == "ddim" and req.eta == 0.0 and grid is None and req.spacing == "trailing"


def test_a_grid_cannot_name_ddpm_or_an_unknown_sampler():
    with pytest.raises(InputError, match="cannot be a bundle's default"):
        grids.record("99-60:4", 100, "", "ddpm")
    assert grids.problem({**SDE_OWN, "method": "ddpm"}, 100) and grids.problem({**SDE_OWN, "method": 3}, 100)
