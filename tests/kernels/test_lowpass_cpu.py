"""The low-frequency crop's CPU route (chunked, FFT or GEMMs) against the float64 reference, over shapes,
dtypes, layouts, chunk sizes and both routes, within 2x the error of torch's own float32 paths."""
import pytest
import torch

from vitdata.kernels import lowpass_crop, lowpass_crop_chunked, lowpass_crop_fft, lowpass_crop_matmul, lowpass_crop_ref
from vitdata.kernels.lowpass_cpu import crop_route

# odd / even, non-square, Nyquist on one or both axes, identity on one axis, 1-pixel outputs; the FFT
# route takes the kept rows as one block for even H and h < H, and gathers them otherwise
SHAPES = [((17, 23), (9, 11)), ((33, 33), (16, 16)), ((40, 36), (20, 18)), ((20, 18), (10, 18)),
          ((18, 20), (18, 10)), ((33, 34), (32, 33)), ((31, 30), (1, 2)), ((24, 24), (24, 24)),
          ((40, 36), (21, 17)), ((64, 48), (2, 47))]
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _input(batch, hw, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    base = torch.randint(0, 256, (batch, 3, H + 3, W + 5), generator=g, dtype=torch.uint8)
    if dtype != torch.uint8:
        base = (base.double() / 64 - 2).to(dtype)
    if layout == "noncontig":
        return base[:, :, 1:1 + H, 2:2 + W]
    x = base[:, :, :H, :W].contiguous()
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def _bound(x, size, out_dtype, **kw):
    """2x the worst error of torch's float32 paths (torch.fft, the whole-batch matmul form) that end in
    out_dtype, against the float64 reference."""
    exact = lowpass_crop_ref(x, size, out_dtype=torch.float64, **kw)
    low = [lowpass_crop_fft(x, size, out_dtype=out_dtype, **kw), lowpass_crop_matmul(x, size, out_dtype=out_dtype, **kw)]
    return exact, 2 * max((y.double() - exact).abs().max().item() for y in low) + 1e-12


@pytest.mark.parametrize("route", ["fft", "gemm"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_both_routes_match_the_reference_over_shapes_dtypes_and_layouts(batch, dtype, layout, route):
    for hw, size in SHAPES:
        x = _input(batch, hw, dtype, layout)
        before = x.clone()
        out_dtype = dtype if dtype.is_floating_point else torch.float32
        for chunk_bytes in (1, 1 << 30):                 # one image per chunk, the whole batch in one
            y = lowpass_crop_chunked(x, size, route=route, chunk_bytes=chunk_bytes)
            assert y.shape == (batch, 3, *size) and y.dtype == out_dtype
            assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                                   else torch.contiguous_format)
            exact, bound = _bound(x, size, out_dtype)
            assert (y.double() - exact).abs().max().item() <= bound, (hw, size, chunk_bytes)
        assert torch.equal(x, before)


@pytest.mark.parametrize("route", ["fft", "gemm"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_normalisation_output_dtype_and_layout_are_fused_as_the_loader_calls_it(route, out_dtype):
    """The loader's low-pass step: a uint8 channels_last batch, mean / std on the 0..255 scale."""
    for hw, size in [((33, 31), (16, 17)), ((40, 36), (20, 18))]:
        x = _input(3, hw, torch.uint8, "channels_last")
        for fmt in (torch.contiguous_format, torch.channels_last):
            kw = dict(mean=MEAN, std=STD, memory_format=fmt)
            y = lowpass_crop_chunked(x, size, out_dtype=out_dtype, route=route, chunk_bytes=1, **kw)
            assert y.dtype == out_dtype and y.is_contiguous(memory_format=fmt)
            exact, bound = _bound(x, size, out_dtype, **kw)
            assert (y.double() - exact).abs().max().item() <= bound


@pytest.mark.parametrize("route", ["fft", "gemm"])
def test_float64_input_is_cropped_in_float64_by_both_routes(route):
    for hw, size in SHAPES:
        x = _input(2, hw, torch.float64, "noncontig")
        y = lowpass_crop_chunked(x, size, route=route, chunk_bytes=1)
        torch.testing.assert_close(y, lowpass_crop_ref(x, size), rtol=0, atol=1e-12)


def test_a_constant_image_stays_constant_through_both_routes():
    u = torch.full((2, 3, 17, 24), 200, dtype=torch.uint8)
    for route in ("fft", "gemm"):
        for size in [(9, 11), (8, 12), (17, 24)]:
            y = lowpass_crop_chunked(u, size, route=route, mean=MEAN, std=STD)
            want = torch.tensor([(200 - m) / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1).expand_as(y)
            torch.testing.assert_close(y, want, rtol=0, atol=2e-6)


def test_the_curriculums_256_to_224_crop_is_within_the_bound_on_one_image():
    x = _input(1, (256, 256), torch.uint8, "contiguous", seed=3)
    kw = dict(mean=MEAN, std=STD)
    exact, bound = _bound(x, 224, torch.float32, **kw)
    for route in ("fft", "gemm"):
        assert (lowpass_crop_chunked(x, 224, route=route, **kw).double() - exact).abs().max().item() <= bound


def test_the_route_follows_the_shape_fft_for_large_images_gemm_for_small_ones():
    assert crop_route(256, 256, 224, 224) == "fft" and crop_route(224, 224, 160, 160) == "fft"
    assert crop_route(80, 80, 64, 64) == "gemm" and crop_route(17, 23, 9, 11) == "gemm"
    with pytest.raises(ValueError, match="route"):
        lowpass_crop_chunked(torch.zeros(1, 3, 8, 8), 4, route="dft")


def test_the_dispatcher_runs_the_chunked_route_on_cpu_and_keeps_the_layout():
    x = _input(2, (40, 36), torch.bfloat16, "channels_last")
    y = lowpass_crop(x, (20, 18))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, lowpass_crop_chunked(x, (20, 18)))
    assert torch.equal(torch.ops.vitdata.lowpass_crop(x, 20, 18, None, None, torch.bfloat16, True), y)


def test_an_empty_batch_gives_an_empty_output():
    y = lowpass_crop_chunked(torch.zeros(0, 3, 16, 16, dtype=torch.uint8), 8)
    assert y.shape == (0, 3, 8, 8) and y.dtype == torch.float32


def test_chunks_shared_among_threads_give_the_same_bits_and_the_thread_setting_comes_back():
    x = _input(7, (40, 36), torch.uint8, "channels_last", seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lowpass_crop_chunked(x, (20, 18), mean=MEAN, std=STD, chunk_bytes=1)
        torch.set_num_threads(3)
        shared = lowpass_crop_chunked(x, (20, 18), mean=MEAN, std=STD, chunk_bytes=1)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, shared)


def test_asking_for_huge_pages_changes_no_value_and_skips_small_tensors():
    from vitdata.kernels.lowpass_cpu import huge_pages

    big = torch.arange(3 << 20, dtype=torch.float32)      # 12 MB
    huge_pages(big)
    assert torch.equal(big, torch.arange(3 << 20, dtype=torch.float32))
    big.fill_(2.0)
    assert big.sum().item() == 2.0 * (3 << 20)
    small = torch.ones(4)
    huge_pages(small)
    assert small.sum().item() == 4.0
