"""PatchErasing: parameter sampling, the Triton kernel and the CPU route against the torch reference, and what
gets erased.

CPU runs the kernel under TRITON_INTERPRET=1 on small batches. The interpreter converts float32 ->
bfloat16 by truncation (the GPU rounds to nearest even), so `normal` noise in bf16 is compared to one
bf16 ulp there; every other fill and every kept value is compared exactly.
"""
import pytest
import torch

from vitdata.kernels import (
    FILLS,
    PatchEraseParams,
    normal_noise,
    patch_erase,
    patch_erase_cells,
    patch_erase_ref,
    patch_erase_triton,
    sample_patch_erase_params,
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _batch(B, C, H, W, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn((B, C, H + 2, W + 3), generator=g).to(dtype).to(DEV)
    if layout == "noncontig":
        return base[:, :, 1:1 + H, 3:3 + W]
    x = base[:, :, :H, :W].contiguous()
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def _params(B, grid, ratio, seed=0):
    return sample_patch_erase_params(B, grid, ratio, torch.Generator().manual_seed(seed), device=DEV)


def _assert_same(k, r, fill):
    if fill == "normal":
        tol = 0.0 if k.dtype == torch.float16 else 2e-6
        ulp = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[k.dtype]
        diff = (k.float() - r.float()).abs()
        assert (diff <= tol + 2 * ulp * r.float().abs().clamp_min(1e-3) + 2e-6).all(), diff.max()
    else:
        assert torch.equal(k, r)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fill", FILLS)
def test_triton_kernel_matches_the_reference_over_fills_dtypes_and_layouts(fill, dtype, layout):
    for B, (H, W), patch in [(1, (12, 20), 4), (3, (16, 24), (8, 4)), (2, (14, 21), 7)]:
        x = _batch(B, 3, H, W, dtype, layout)
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        params = _params(B, (H // ph, W // pw), torch.linspace(0.1, 0.6, B))
        before = x.clone()
        r = patch_erase_ref(x, params, patch, fill)
        k = patch_erase_triton(x, params, patch, fill)
        assert torch.equal(x, before), "out of place must leave x untouched"
        assert k.dtype == dtype and k.shape == x.shape
        if layout == "channels_last":
            assert k.is_contiguous(memory_format=torch.channels_last)
        _assert_same(k, r, fill)
        # In place: returns x itself with the same values.
        xi = before.clone()
        if layout == "noncontig":
            xi = _batch(B, 3, H, W, dtype, layout)
        out = patch_erase_triton(xi, params, patch, fill, inplace=True)
        assert out is xi
        _assert_same(xi, r, fill)


@pytest.mark.parametrize("fill", FILLS)
def test_exactly_the_drawn_cells_are_erased_and_nothing_else(fill):
    B, C, H, W, p = 3, 3, 16, 24, 4
    x = _batch(B, C, H, W, torch.float32, "contiguous") + 10.0  # no value can equal a fill by chance
    params = _params(B, (H // p, W // p), 0.3)
    y = patch_erase_triton(x, params, p, fill)
    cells = params.mask.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None].expand(B, C, H, W)
    assert torch.equal(y[~cells], x[~cells])
    assert (y[cells] != x[cells]).all()
    if fill == "zero":
        assert (y[cells] == 0).all()
    elif fill == "mean":
        m = x.float().mean(dim=(2, 3))[:, :, None, None].expand(B, C, H, W)
        assert torch.equal(y[cells], m[cells])


def test_erased_fraction_matches_the_ratio_per_sample():
    grid = (14, 14)
    ratios = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.5, 1.0])
    params = _params(len(ratios), grid, ratios)
    counts = params.mask.sum(dim=(1, 2)).cpu()
    assert counts.tolist() == torch.floor(ratios.double() * 196 + 0.5).long().tolist()
    assert params.mask.dtype == torch.bool and params.grid == grid
    p = _params(4, (7, 9), 0.25)
    assert p.mask.sum(dim=(1, 2)).tolist() == [16] * 4  # floor(0.25 * 63 + 0.5)


def test_cells_are_drawn_uniformly_and_reproducibly():
    p = _params(4000, (4, 4), 0.25, seed=1)
    freq = p.mask.float().mean(0).flatten().cpu()
    assert (freq - 0.25).abs().max() < 0.03
    q = _params(4000, (4, 4), 0.25, seed=1)
    assert torch.equal(p.mask, q.mask) and torch.equal(p.seed, q.seed)
    assert not torch.equal(p.mask, _params(4000, (4, 4), 0.25, seed=2).mask)
    assert len(torch.unique(p.seed)) > 3900


def test_normal_fill_is_standard_normal_and_depends_only_on_seed_and_position():
    z = normal_noise(torch.arange(8), 3, 32, 32)
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    assert torch.equal(normal_noise(torch.tensor([5]), 3, 32, 32)[0], z[5])
    assert not torch.equal(z[0], z[1])
    # Fraction within one sigma ~ 0.683.
    assert abs((z.abs() < 1).float().mean().item() - 0.6827) < 0.01


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontig"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fill", FILLS)
def test_the_cpu_route_equals_the_reference_bit_for_bit_over_fills_dtypes_and_layouts(fill, dtype, layout):
    cases = [(1, (12, 20), 4, 0.5), (3, (16, 24), (8, 4), torch.tensor([0.0, 0.3, 1.0])), (2, (14, 21), 7, 0.25),
             (2, (32, 32), 16, 1.0)]
    for B, (H, W), patch, ratio in cases:
        x = _batch(B, 3, H, W, dtype, layout).cpu()
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        params = sample_patch_erase_params(B, (H // ph, W // pw), ratio, torch.Generator().manual_seed(B))
        before = x.clone()
        r = patch_erase_ref(x, params, patch, fill)
        c = patch_erase_cells(x, params, patch, fill)
        assert torch.equal(x, before), "out of place must leave x untouched"
        assert torch.equal(c, r) and c.stride() == r.stride()
        xi = x.clone(memory_format=torch.preserve_format) if layout != "noncontig" else _batch(B, 3, H, W, dtype,
                                                                                               layout).cpu()
        assert patch_erase_cells(xi, params, patch, fill, inplace=True) is xi
        assert torch.equal(xi, r)


def test_the_cpu_route_in_place_fills_with_the_mean_of_the_image_before_erasing():
    x = torch.rand(2, 3, 8, 8) + torch.arange(2.0).view(2, 1, 1, 1)
    params = sample_patch_erase_params(2, (2, 2), 0.5, torch.Generator().manual_seed(1))
    means = x.mean(dim=(2, 3))
    y = patch_erase_cells(x, params, 4, "mean", inplace=True)
    cells = params.mask.repeat_interleave(4, 1).repeat_interleave(4, 2)
    for b in range(2):
        for c in range(3):
            assert torch.equal(y[b, c][cells[b]], means[b, c].expand(int(cells[b].sum())))


def test_dispatcher_matches_the_reference_on_cpu_and_works_under_torch_compile():
    x = torch.randn(2, 3, 16, 16)
    params = sample_patch_erase_params(2, (4, 4), 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(patch_erase(x, params, 4, "normal"), patch_erase_ref(x, params, 4, "normal"))
    assert torch.equal(patch_erase(x, params, 4, "normal"), patch_erase_cells(x, params, 4, "normal"))
    f = torch.compile(lambda t, m, s: patch_erase(t, PatchEraseParams(m, s), 4, "zero"), backend="aot_eager",
                      fullgraph=True)
    assert torch.equal(f(x, params.mask, params.seed), patch_erase_ref(x, params, 4, "zero"))
    xi = x.clone()
    assert patch_erase(xi, params, 4, "mean", inplace=True) is xi
    assert torch.equal(xi, patch_erase_ref(x, params, 4, "mean"))
    torch.library.opcheck(torch.ops.vitdata.patch_erase.default, (x, params.mask, params.seed, 4, 4, "normal"),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.vitdata.patch_erase_.default, (x.clone(), params.mask, params.seed, 4, 4, "zero"),
                          test_utils=("test_schema", "test_faketensor"))


def test_bad_arguments_fail_with_clear_messages():
    x = torch.randn(2, 3, 16, 16)
    params = sample_patch_erase_params(2, (4, 4), 0.5)
    with pytest.raises(ValueError, match="divide"):
        patch_erase(x, params, 5)
    with pytest.raises(ValueError, match="needs"):
        patch_erase(x, params, 8)
    with pytest.raises(ValueError, match="fill"):
        patch_erase(x, params, 4, "noise")
    with pytest.raises(ValueError, match="dtype"):
        patch_erase(x.to(torch.uint8), params, 4)
    with pytest.raises(ValueError, match="ratio"):
        sample_patch_erase_params(2, (4, 4), 1.5)
    with pytest.raises(ValueError, match="ratio"):
        sample_patch_erase_params(2, (4, 4), torch.tensor([0.1, 0.2, 0.3]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("inplace", [False, True])
def test_gpu_kernel_matches_reference_at_224_patch_16(dtype, fill, inplace):
    x = torch.randn(256, 3, 224, 224, device="cuda").to(dtype)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.contiguous(memory_format=fmt)
        params = sample_patch_erase_params(256, (14, 14), torch.rand(256) * 0.3, torch.Generator().manual_seed(0),
                                           device="cuda")
        r = patch_erase_ref(xi, params, 16, fill)
        k = patch_erase(xi.clone() if inplace else xi, params, 16, fill, inplace=inplace)
        _assert_same(k, r, fill)
