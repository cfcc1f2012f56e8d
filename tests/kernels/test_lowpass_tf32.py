"""The low-pass kernel's tensor-core arithmetic, emulated on CPU (tests/support/tensorcore.py), and the GPU
tolerance set from it.

Triton's interpreter ignores ``input_precision``, so the interpreted kernel (test_lowpass.py) never shows
the TF32 rounding a GPU applies to every ``tl.dot`` operand. Here the emulation is checked against the
interpreted kernel with that rounding switched off (the same stages, sums and Nyquist term), then run with
it over the grid of the GPU tests: against the tolerance those tests use (test_lowpass.py ``_bound``: 2x
torch's float32 error plus 2x the emulated tensor-core error of the same input), in both TF32 rounding
modes, with a third of the tolerance to spare.
"""
import pytest
import torch

from vitdata.kernels import lowpass_crop_fft, lowpass_crop_matmul, lowpass_crop_ref, lowpass_crop_triton

import tensorcore

# the grid of test_lowpass.py's test_gpu_kernel_matches_reference_at_real_sizes (batch 2 here, 8-256 there)
GPU_DTYPES = [(torch.bfloat16, torch.bfloat16), (torch.uint8, torch.bfloat16), (torch.float32, torch.float32),
              (torch.float16, torch.float16)]
GPU_SHAPES = [((224, 224), (160, 160)), ((223, 223), (161, 161)), ((224, 224), (192, 192)), ((64, 64), (33, 33)),
              ((224, 200), (96, 111))]
SPARE = 0.75      # the emulated error must stay under this share of the GPU tolerance


def _input(batch, hw, dtype, seed):
    x = torch.rand((batch, 3, *hw), generator=torch.Generator().manual_seed(seed))
    return (x * 255).to(torch.uint8) if dtype == torch.uint8 else (x * 4 - 2).to(dtype)


def test_tf32_keeps_ten_mantissa_bits_truncated_or_rounded_half_away_from_zero():
    u = 2.0**-10                                    # TF32's ulp in [1, 2); 2u in [2, 4)
    x = torch.tensor([1 + u / 2, 1 + u / 2 - 2.0**-23, 1 + u, -(1 + u / 2), 3 + 0.75 * 2 * u])
    assert tensorcore.to_tf32(x, "rz").tolist() == [1, 1, 1 + u, -1, 3]
    assert tensorcore.to_tf32(x, "rna").tolist() == [1 + u, 1, 1 + u, -(1 + u), 3 + 2 * u]
    y = torch.randn(1000)
    for mode in ("rz", "rna"):
        r = tensorcore.to_tf32(y, mode)
        assert torch.all((r.view(torch.int32) & 0x1FFF) == 0)          # 13 low bits cleared
        assert ((r - y).abs() <= y.abs() * 2.0**-10).all()


@pytest.mark.parametrize("in_dtype", [torch.uint8, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hw,size", [((17, 23), (9, 11)), ((40, 36), (20, 18)), ((33, 31), (16, 17))])
def test_the_emulation_without_tf32_rounding_reproduces_the_interpreted_kernel(in_dtype, hw, size):
    """Same stages, K chunks, Nyquist term and normalisation as the real kernel: only the rounding differs."""
    x = _input(2, hw, in_dtype, seed=3)
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]) if in_dtype == torch.uint8 else {}
    kernel = lowpass_crop_triton(x, size, out_dtype=torch.float32, **norm)
    emulated = tensorcore.emulate_lowpass_crop(x, size, out_dtype=torch.float32, precision="ieee", block_k=16, **norm)
    scale = kernel.abs().max().item()
    assert (emulated - kernel).abs().max().item() <= 4e-6 * scale
    # with TF32 the operands lose 13 bits: an error the interpreted kernel cannot show
    tf32 = tensorcore.emulate_lowpass_crop(x, size, out_dtype=torch.float32, precision="tf32", block_k=16, **norm)
    exact = lowpass_crop_ref(x, size, out_dtype=torch.float64, **norm)
    assert (tf32.double() - exact).abs().max() > 30 * (kernel.double() - exact).abs().max()


def test_the_gpu_tolerance_covers_the_emulated_kernel_over_the_gpu_test_grid():
    rows, worst_old = [], 0.0
    for in_dtype, out_dtype in GPU_DTYPES:
        for hw, size in GPU_SHAPES:
            x = _input(2, hw, in_dtype, seed=0)
            exact = lowpass_crop_ref(x, size, out_dtype=torch.float64)
            old = 2 * max((y.double() - exact).abs().max().item()
                          for y in (lowpass_crop_fft(x, size, out_dtype=out_dtype),
                                    lowpass_crop_matmul(x, size, out_dtype=out_dtype))) + 1e-12
            # what test_lowpass.py's _bound adds on a GPU
            new = old + 2 * tensorcore.tensor_core_error(x, size, exact, out_dtype=out_dtype)
            block_k = tensorcore.launch_block_k(x, out_dtype)
            for mode in ("rz", "rna"):
                y = tensorcore.emulate_lowpass_crop(x, size, out_dtype=out_dtype, precision=tensorcore.kernel_precision(
                    out_dtype), mode=mode, block_k=block_k)
                err = (y.double() - exact).abs().max().item()
                rows.append(f"{str(in_dtype)[6:]:>8}->{str(out_dtype)[6:]:<8} {hw}->{size} {mode:3}: "
                            f"{err / old:.2f}x torch's 2x bound, {err / new:.2f}x the GPU tolerance")
                worst_old = max(worst_old, err / old)
                assert err <= SPARE * new, rows[-1]
    print("\n" + "\n".join(rows) + f"\nworst against torch's bound alone: {worst_old:.2f}x")
