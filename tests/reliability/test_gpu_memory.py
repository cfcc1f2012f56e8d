"""RELIABILITY F3 (GPU only): GPU memory stays flat over a long run whose size schedule changes the
resolution, after each resolution's first epoch. Skipped without CUDA (``gpu`` marker).

Set ``VITDATA_F3_STEPS`` for the full length (the matrix asks for 20,000 steps); the default keeps a
GPU run to a few minutes."""
import os

import numpy as np
import pytest
import torch

from vitdata import LoaderConfig, create_loader
from vitdata.data import selfid
from vitdata.loader.config import ScheduleConfig

pytestmark = pytest.mark.gpu

STEPS = int(os.environ.get("VITDATA_F3_STEPS", "4000"))
BATCH = 32
SAMPLES = 1024            # 32 steps per epoch


def _slope_mb_per_1000(steps: list[int], mb: list[float]) -> float:
    return float(np.polyfit(np.asarray(steps, float), np.asarray(mb, float), 1)[0] * 1000)


def test_gpu_memory_is_flat_per_resolution_after_its_first_epoch(tmp_path):
    """RELIABILITY F3 (GPU memory flat)."""
    root = tmp_path / "train"
    selfid.write_imagefolder(str(root), SAMPLES, num_classes=8, size=96)
    steps_per_epoch = SAMPLES // BATCH
    epochs = max(4, STEPS // steps_per_epoch)
    # progressive size: 32 -> 64 -> 96 px over the first half of the run, then 96 px to the end
    cfg = LoaderConfig(data=str(root), batch_size=BATCH, image_size=96, backend="dali",
                       schedule=ScheduleConfig(name="progressive-size", epochs=epochs,
                                               kwargs={"init_size": 32, "step_px": 32}))
    loader = create_loader(cfg)
    samples = {}          # size -> (global step, torch reserved MB, device used MB) after that size's first epoch
    seen_epochs = {}      # size -> epochs started at that size
    step = 0
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            size = None
            for batch in loader:
                size = int(batch.images.shape[-1])
                step += 1
                if seen_epochs.get(size, 0) >= 1 and step % 10 == 0:
                    torch.cuda.synchronize()
                    samples.setdefault(size, []).append(
                        (step, torch.cuda.memory_reserved() / 2**20, _device_used_mb()))
            seen_epochs[size] = seen_epochs.get(size, 0) + 1
    finally:
        loader.close()
    assert len(samples) >= 2, f"the schedule should reach several sizes: {sorted(seen_epochs)}"
    lines = []
    for size, rows in sorted(samples.items()):
        if len(rows) < 20:
            continue
        st, torch_mb, used_mb = zip(*rows)
        s_torch, s_used = _slope_mb_per_1000(st, torch_mb), _slope_mb_per_1000(st, used_mb)
        lines.append(f"{size} px: {len(rows)} samples, torch reserved {min(torch_mb):.0f}-{max(torch_mb):.0f} MB "
                     f"(slope {s_torch:+.3f} MB/1000 steps), device in use {min(used_mb):.0f}-{max(used_mb):.0f} "
                     f"MB incl. DALI (slope {s_used:+.3f})")
        assert s_torch <= 1.0 and s_used <= 1.0, lines[-1]
    print(f"\nF3 over {step} steps:\n  " + "\n  ".join(lines))
    assert len(lines) >= 2, "too few steps at each size to fit a slope: raise VITDATA_F3_STEPS"


def _device_used_mb() -> float:
    """Memory in use on the device by every allocator (torch's caching allocator, DALI's pools, the CUDA
    context): DALI allocates outside torch, so torch's own counters cannot see it."""
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20
