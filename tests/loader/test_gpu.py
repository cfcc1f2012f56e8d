"""GPU path (skipped without CUDA): mixed decode, tensors handed to torch on the consumer's stream."""
import pytest
import torch

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig, EvalConfig, OutputConfig

from .conftest import decode_batch, pixel_ids

pytestmark = pytest.mark.gpu


def test_gpu_batches_live_on_the_device_in_the_requested_format(tiny_data):
    cfg = LoaderConfig(data=tiny_data, batch_size=8, image_size=32, backend="dali",
                       output=OutputConfig(dtype="bfloat16", channels_last=True))
    loader = create_loader(cfg)
    try:
        for b in loader:
            assert b.images.is_cuda and b.images.dtype == torch.bfloat16
            assert b.images.is_contiguous(memory_format=torch.channels_last) and b.ids.is_cuda
    finally:
        loader.close()


def test_gpu_eval_matches_the_cpu_pipeline_within_decoder_tolerance(tiny_data):
    base = dict(data=tiny_data, batch_size=8, image_size=32, backend="dali", eval=EvalConfig(crop_pct=1.0))
    out = {}
    for device in ("cuda", "cpu"):
        loader = create_loader(LoaderConfig(output=OutputConfig(device=device), **base), split="eval")
        out[device] = torch.cat([b.images.float().cpu() for b in loader])
        loader.close()
    assert float((out["cuda"] - out["cpu"]).abs().mean()) * 0.226 * 255 <= 4.0


def test_gpu_ids_decode_from_pixels(tiny_data):
    cfg = LoaderConfig(data=tiny_data, batch_size=8, image_size=32, backend="dali",
                       augment=AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False))
    loader = create_loader(cfg)
    try:
        pid = pixel_ids(loader.index)
        for b in loader:
            assert [d[0] for d in decode_batch(b.images)] == [pid[i] for i in b.ids.tolist()]
    finally:
        loader.close()
