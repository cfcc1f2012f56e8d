"""Curriculum kernels (Triton on CUDA, PyTorch on CPU). Installed as vitdata.kernels.

Public ops (dispatchers; also registered as ``torch.ops.vitdata.*`` for torch.compile):
    lowpass_crop(x, size, *, mean, std, out_dtype, memory_format)   EfficientTrain's Fourier crop
    lowpass_filter(x, size, ...)                                     the same band limit at full size
    lanczos_resize(x, size, *, mean, std, out_dtype, memory_format)  EfficientTrain++'s Lanczos resize
    sample_patch_erase_params(batch, grid, ratio, generator, device) -> PatchEraseParams
    patch_erase(x, params, patch_size, fill, inplace)                PatchErasing on the normalised batch
Each has a ``*_ref`` (pure torch) and a ``*_triton`` launcher beside it, and a CPU route that the
dispatcher uses on CPU tensors (``lowpass_crop_chunked`` in ``lowpass_cpu.py``, ``patch_erase_cells``).
Importing this package needs neither a GPU nor DALI; Triton is imported but only launched for CUDA
tensors (or on CPU under ``TRITON_INTERPRET=1`` in tests).
"""
if __name__ != "vitdata.kernels":
    # One name for one set of files: loaded twice, their torch.library ops would register twice.
    raise ImportError(f"import this package as vitdata.kernels, not as {__name__!r}")

from .lowpass import (
    crop_matrices,
    lowpass_crop,
    lowpass_crop_fft,
    lowpass_crop_matmul,
    lowpass_crop_ref,
    lowpass_crop_triton,
    lowpass_filter,
    lowpass_filter_ref,
)
from .lowpass_cpu import lowpass_crop_chunked  # registers the op's CPU kernel
from .resample import lanczos_resize, lanczos_resize_ref
from .patch_erase import (
    FILLS,
    PatchEraseParams,
    normal_noise,
    patch_erase,
    patch_erase_cells,
    patch_erase_ref,
    patch_erase_triton,
    sample_patch_erase_params,
)


def shrink_op(lowpass_filter: str):
    """The op that brings a batch down to a step's low-pass size, by the schedule's ``Knobs.lowpass_filter``:
    ``lowpass_crop`` ("fourier") or ``lanczos_resize`` ("lanczos"), looked up when called."""
    return lanczos_resize if lowpass_filter == "lanczos" else lowpass_crop


__all__ = [
    "shrink_op", "lanczos_resize", "lanczos_resize_ref",
    "crop_matrices", "lowpass_crop", "lowpass_crop_chunked", "lowpass_crop_fft", "lowpass_crop_matmul",
    "lowpass_crop_ref", "lowpass_crop_triton", "lowpass_filter", "lowpass_filter_ref",
    "FILLS", "PatchEraseParams", "normal_noise", "patch_erase", "patch_erase_cells", "patch_erase_ref",
    "patch_erase_triton", "sample_patch_erase_params",
]
