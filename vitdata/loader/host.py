"""What the host gives a backend: the output device (and DALI's device id), and threads and workers.

Nothing here imports DALI, so a GPU machine without DALI resolves its device and runs the torch backend.
"""
from __future__ import annotations

import contextlib
import os

import torch

from vitdata.errors import ConfigError

# GPUs with the hardware JPEG decoder (NVJPG): A100 / A30 (sm_80), H100 / H200 (sm_90), B200 (sm_100).
_HW_JPEG_CAPABILITIES = frozenset({(8, 0), (9, 0), (10, 0)})
HW_DECODER_LOAD = 0.65   # share of JPEGs that go to the hardware decoder there (the rest: CUDA + CPU threads)


def local_cuda_index(rank: int = 0) -> int:
    """This rank's GPU: torch's current device once CUDA is initialised (the trainer chose it), else
    ``LOCAL_RANK`` (torchrun), else ``rank``, modulo the visible devices."""
    if torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return int(os.environ.get("LOCAL_RANK", rank)) % max(1, torch.cuda.device_count())


def resolve_device(spec, rank: int = 0) -> torch.device:
    """``OutputConfig.device`` -> a torch.device; a GPU always with its index.

    ``"auto"``: this rank's GPU when CUDA is available, else the CPU. ``"cuda"`` / ``torch.device("cuda")``:
    this rank's GPU (:func:`local_cuda_index`). ``"cuda:N"``: GPU N. ``"cpu"``: the CPU."""
    if isinstance(spec, torch.device):
        dev = spec
    elif spec == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"output.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got "
                              f"{spec!r}", ("output.device",)) from e
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ConfigError(f"output.device must be the CPU or a CUDA GPU, got {spec!r}", ("output.device",))
    if not torch.cuda.is_available():
        raise ConfigError(f"output.device is {spec!r} but CUDA is not available", ("output.device",))
    return torch.device("cuda", local_cuda_index(rank) if dev.index is None else dev.index)


def dali_device_id(device: torch.device) -> int | None:
    """DALI's ``device_id`` for an output device: its GPU index (GPU ops, mixed decoder), None on the CPU."""
    return device.index if device.type == "cuda" else None


def cores_per_rank() -> int:
    """The cores this process may use (its affinity mask) divided among the ranks on this host
    (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local)


def default_threads(backend: str) -> int:
    """DALI CPU threads when ``num_threads`` is None: half of this rank's cores, at least 2 (the torch
    backend does not use them)."""
    return max(2, cores_per_rank() // 2)


def default_workers(backend: str) -> int:
    """Source workers when ``num_workers`` is None. DALI: half of this rank's cores (the other half are
    its threads), at least 2. torch: the DataLoader workers decode too, so all cores but one, at least 2."""
    share = cores_per_rank()
    return max(2, share // 2) if backend == "dali" else max(2, share - 1)


def kernel_threads(num_threads: int, num_workers: int, backend: str) -> int:
    """Intra-op threads for the loader's CPU kernels (low-pass crop, PatchErasing, the uint8 normalisation):
    this rank's cores that neither DALI's ``num_threads`` (DALI backend) nor the ``num_workers`` source or
    DataLoader workers hold, at least 1. The kernels run while those decode the next batch, so more
    threads only compete with them (``kernels/lowpass_cpu.py``). Row 1 of ``vitdata bench loader`` on
    2 cores (one loader, windows alternating, load 14): 23.9 images/s with one kernel thread, 20.2 with two."""
    held = num_workers + (num_threads if backend == "dali" else 0)
    return max(1, cores_per_rank() - held)


@contextlib.contextmanager
def intra_op_threads(device, n: int):
    """Run torch CPU ops on at most ``n`` intra-op threads inside the block, then restore the caller's
    setting; nothing changes for a CUDA device or when the caller already uses ``n`` or fewer."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_hw_decoder_load(device_id: int | None) -> float | None:
    """``hw_decoder_load`` for DALI's mixed decoder: :data:`HW_DECODER_LOAD` on a GPU with the hardware
    JPEG decoder, None (DALI's default) elsewhere and on the CPU."""
    if device_id is None:
        return None
    try:
        cap = tuple(torch.cuda.get_device_capability(device_id))
    except Exception:
        return None
    return HW_DECODER_LOAD if cap in _HW_JPEG_CAPABILITIES else None
