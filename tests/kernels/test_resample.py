"""EfficientTrain++'s Lanczos resize of the batch: its matrices against Pillow's ``Image.resize(LANCZOS)``
(what the released code runs per image), and every route of the op (CPU chunked GEMMs, the Triton kernel
under the interpreter, the matmul form) against the float64 reference."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitdata.data import selfid
from vitdata.kernels import lanczos_resize, lanczos_resize_ref, lowpass_crop_matmul, lowpass_crop_triton
from vitdata.kernels.lowpass import lanczos_matrix64

from photos import center_crops

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _pil_and_ours(images: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Pillow's Lanczos resize of each HWC uint8 image to n x n, the op's, rounded and clipped as
    Pillow stores it)."""
    pil = np.stack([np.asarray(Image.fromarray(im).resize((n, n), Image.LANCZOS)) for im in images])
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    ours = lanczos_resize(x, n).permute(0, 2, 3, 1).numpy()
    return pil.astype(np.float64), np.clip(np.rint(ours), 0, 255)


def _smooth_images(count: int, size: int) -> np.ndarray:
    """Self-identifying test images, made smooth the way photos are (a bicubic upscale from a third)."""
    out = []
    for k in range(count):
        im = Image.fromarray(selfid.make_image(k, k % 10, size // 3)).resize((size, size), Image.BICUBIC)
        out.append(np.asarray(im))
    return np.stack(out)


@pytest.mark.parametrize("N,n", [(112, 80), (112, 96), (112, 48), (224, 160), (37, 11), (64, 64)])
def test_lanczos_rows_sum_to_one_so_a_constant_image_stays_constant(N, n):
    L = lanczos_matrix64(N, n)
    np.testing.assert_allclose(L.sum(1).numpy(), 1.0, atol=1e-12)
    x = torch.full((1, 3, N, N), 117.0)
    np.testing.assert_allclose(lanczos_resize(x, n).numpy(), 117.0, atol=1e-3)


def test_lanczos_at_the_same_size_is_the_identity():
    torch.testing.assert_close(lanczos_matrix64(50, 50), torch.eye(50, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("N,n", [(112, 80), (112, 96), (112, 48), (96, 40)])
def test_lanczos_resize_rounds_to_pillows_lanczos_on_smooth_images(N, n):
    # Pillow rounds and clips after each pass; the op keeps float precision: a level now and then.
    pil, ours = _pil_and_ours(_smooth_images(6, N), n)
    diff = np.abs(pil - ours)
    assert diff.mean() <= 0.3 and np.quantile(diff, 0.99) <= 1.0, (diff.mean(), diff.max())


@pytest.mark.parametrize("n", [80, 96, 160, 192])
def test_lanczos_resize_rounds_to_pillows_lanczos_on_real_photos(imagenet_samples, n):
    photos = center_crops(imagenet_samples, count=4).transpose(0, 2, 3, 1)
    pil, ours = _pil_and_ours(np.ascontiguousarray(photos), n)
    diff = np.abs(pil - ours)
    assert diff.mean() <= 0.3 and np.quantile(diff, 0.99) <= 1.0, (diff.mean(), diff.max())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_route_of_the_lanczos_resize_matches_the_float64_reference(dtype, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 40, 36), generator=g, dtype=torch.uint8).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, std = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]
    ref = lanczos_resize_ref(x, (20, 17), mean=mean, std=std, out_dtype=torch.float32)
    routes = {
        "dispatcher": lanczos_resize(x.to(DEV), (20, 17), mean=mean, std=std).cpu(),
        "matmul": lowpass_crop_matmul(x, (20, 17), mean=mean, std=std, out_dtype=torch.float32, kind="lanczos"),
        "triton": lowpass_crop_triton(x.to(DEV), (20, 17), mean=mean, std=std, out_dtype=torch.float32,
                                      kind="lanczos").cpu(),
    }
    for name, y in routes.items():
        assert y.shape == (3, 3, 20, 17) and y.dtype == torch.float32, name
        assert y.is_contiguous(memory_format=torch.channels_last) == channels_last, name
        torch.testing.assert_close(y, ref, atol=2e-4, rtol=1e-4, msg=name)


def test_the_lanczos_resize_is_a_torch_library_op_with_a_fake_kernel():
    x = torch.rand(2, 3, 32, 32)
    out = torch.compile(lambda t: lanczos_resize(t, 16), fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(out, lanczos_resize_ref(x, 16, out_dtype=torch.float32), atol=1e-4, rtol=1e-4)
