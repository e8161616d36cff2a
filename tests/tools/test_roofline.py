"""The training step's roofline (counted on the CPU) and its profile: counts and arithmetic, not speed."""

import json

import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime.errors import InputError  # noqa: E402
from edgediff.tools import bench_train as bt  # noqa: E402
from edgediff.tools import roofline as rl  # noqa: E402
from edgediff.tools import train_profile as tp  # noqa: E402
from edgediff.train.models import UNet1DConfig, build_model  # noqa: E402

pytestmark = pytest.mark.torch
SMALL = UNet1DConfig(base_width=8, length=64)


@pytest.fixture(scope="module")
def counted():
    return rl.count(SMALL, SMALL.sample_shape)


def test_counted_flops_are_the_flop_counters_and_bytes_split_into_frames_and_weights(counted):
    rows, n_params = counted
    assert n_params == sum(p.numel() for p in build_model(SMALL).parameters())
    assert sum(r.flops for r in rows) == pytest.approx(bt.flops_per_frame(SMALL, SMALL.sample_shape)["train"], rel=1e-6)
    by = {r.name: r for r in rows}
    assert {"convolution", "convolution_backward", "native_group_norm", "silu"} <= set(by)
    assert by["silu"].flops == 0 and by["convolution"].flops > 0
    assert "view" not in by and "transpose" not in by  # views move nothing
    # what grows with the batch and what does not, from two batches, predicts a third
    torch.manual_seed(0)
    measured = rl._count_pass(build_model(SMALL), SMALL.sample_shape, 16)
    for name in ("convolution", "convolution_backward", "native_group_norm"):
        assert measured[name][1] == pytest.approx(16 * by[name].bytes_per_frame + by[name].bytes_fixed, rel=1e-6)
    # a convolution's backward pass writes its weights' gradient: bytes that do not grow with the batch
    assert by["convolution_backward"].bytes_fixed > 0 and by["silu"].bytes_fixed == pytest.approx(0, abs=1)


def test_bounds_are_the_roofline_at_its_limits(counted):
    rows, n_params = counted
    train = sum(r.flops for r in rows)
    b = rl.bounds(rows, n_params, 512, 100.0, 1.0)
    assert b["eager"]["frames_per_s"] < b["fused"]["frames_per_s"]
    assert 0 < b["eager"]["fraction_of_peak"] < b["fused"]["fraction_of_peak"] < 1
    # endless bandwidth: only arithmetic is left, the peak itself
    compute = rl.bounds(rows, n_params, 512, 100.0, 1e12)
    assert compute["eager"]["fraction_of_peak"] == pytest.approx(1.0, rel=1e-6)
    assert compute["eager"]["frames_per_s"] == pytest.approx(100e12 / train, rel=1e-6)
    # endless arithmetic: only bytes are left, every one of them at the bandwidth (bf16 moves half of float32)
    memory = rl.bounds(rows, n_params, 512, 1e12, 1.0, element_bytes=4)
    moved = sum(512 * r.bytes_per_frame + r.bytes_fixed for r in rows) + n_params * rl.OPTIMIZER_BYTES_PER_PARAM
    assert memory["eager"]["frames_per_s"] == pytest.approx(512 * 1e12 / moved, rel=1e-6)
    assert memory["memory_bound_share_eager"] == pytest.approx(1.0)
    assert rl.bounds(rows, n_params, 512, 1e12, 1.0)["eager"]["frames_per_s"] > 1.9 * memory["eager"]["frames_per_s"]


def test_a_wider_network_does_more_arithmetic_per_byte():
    narrow, wide = (rl.count(UNet1DConfig(base_width=w, length=64), (2, 64)) for w in (8, 32))
    h200 = rl.gpu_figures("NVIDIA H200")
    assert (rl.bounds(*wide, 1024, *h200)["eager"]["fraction_of_peak"]
            > 1.5 * rl.bounds(*narrow, 1024, *h200)["eager"]["fraction_of_peak"])


def test_gpus_are_known_by_name_or_refused():
    assert rl.gpu_figures("NVIDIA H100 PCIe") == (bt.PEAKS["H100 PCIe"][0], 2.0)
    assert rl.gpu_figures("H200", bandwidth_tbs=1.0) == (bt.PEAKS["H200"][0], 1.0)
    assert rl.device_figures(None, None, None) is None and rl.device_figures(None, 3.0, 0.1) == (3.0, 0.1)
    assert set(rl.BANDWIDTH) == set(bt.PEAKS)
    with pytest.raises(InputError, match="'B200' is unknown.*--bandwidth-tbs"):
        rl.gpu_figures("B200")


def test_bench_train_roofline_prints_the_bounds_without_training(tmp_path):
    out = tmp_path / "roofline.json"
    from click.testing import CliRunner

    from edgediff.tools.cli import cli

    args = ["bench-train", "--width", "8", "--roofline", "H200", "--variant", "today", "--variant", "fast:batch=1024"]
    res = CliRunner().invoke(cli, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert [b["batch"] for b in report["bounds"]] == [512, 1024] and report["gpu"] == "H200"
    assert res.stdout.count("roofline at batch") == 2 and "convolution_backward" in res.stdout
    bad = CliRunner().invoke(cli, [*args[:3], "--roofline", "B200"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, group", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x64x64", "convolution"),
    ("sm80_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("cutlass_tensorop_bf16_s16816dgrad_optimized_bf16_64x64_64x5_nhwc_align8", "convolution"),
    ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x4_tn", "matmul"),
    ("triton_poi_fused_add_mul_silu_3", "triton pointwise"),
    ("triton_red_fused_native_group_norm_backward_7", "triton reduction"),
    ("triton_per_fused_sum_2", "triton reduction"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true>", "layout"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>", "elementwise"),
    ("aten::native_group_norm_backward", "norm"),
    ("aten::expand", "other"),
    ("aten::add_", "elementwise"),
])
def test_kernels_are_grouped_by_their_names(name, group):
    assert tp.group_of(name) == group


def test_a_trace_s_kernels_are_summed_by_group_and_busy_time_is_their_union():
    events = [{"cat": "kernel", "name": "sm90_xmma_fprop_implicit_gemm", "ts": 0.0, "dur": 10.0},
              {"cat": "kernel", "name": "triton_poi_fused_silu_0", "ts": 5.0, "dur": 10.0},  # overlaps the first
              {"cat": "kernel", "name": "sm90_xmma_fprop_implicit_gemm", "ts": 40.0, "dur": 20.0},
              {"cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 0.0, "dur": 90.0},
              {"cat": "kernel", "name": "no duration", "ts": 1.0}]
    kernels = tp.kernels_of(events)
    p = tp.summarise(kernels, wall_s=100e-6, busy_us=tp._union(kernels))
    assert p["kernels"] == 3 and p["kernel_s"] == pytest.approx(40e-6)
    assert p["groups"]["convolution"]["share"] == pytest.approx(0.75) and list(p["groups"]) == ["convolution", "triton pointwise"]
    assert p["busy_s"] == pytest.approx(35e-6) and p["busy_fraction"] == pytest.approx(0.35)
    assert p["top"][0] == {"name": "sm90_xmma_fprop_implicit_gemm", "group": "convolution", "calls": 2,
                           "seconds": pytest.approx(30e-6), "share": pytest.approx(0.75)}


def test_profiled_cpu_steps_name_their_operators(tmp_path):
    model = build_model(SMALL)
    x, t = torch.randn(4, *SMALL.sample_shape), torch.tensor([1.0, 10.0, 100.0, 900.0])

    def steps():
        for _ in range(3):
            model(x, t).square().mean().backward()

    p = tp.profile_steps(steps, torch.device("cpu"), tmp_path / "t.json.gz")
    assert (tmp_path / "t.json.gz").stat().st_size > 0 and "busy_fraction" not in p and p["unit"] == "operator calls"
    assert sum(g["share"] for g in p["groups"].values()) == pytest.approx(1.0)
    assert {"convolution", "norm", "elementwise"} <= set(p["groups"])
    conv = next(r for r in p["top"] if r["name"] == "aten::convolution_backward")
    assert conv["calls"] == 3 * sum(isinstance(m, torch.nn.Conv1d) for m in model.modules())  # each, three passes
