"""GPU path (skipped without CUDA): mixed decode, tensors handed to torch on the consumer's stream."""
import pytest
import torch
from photos import bad_component

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


def test_gpu_a_step_failing_in_the_mixed_decoder_is_redone_as_by_a_loader_that_knew_the_file(tmp_path, monkeypatch):
    """The redo of a failed step (vitdata.loader.backends.dali_redo) on the GPU graph: no rebuild, and the
    batches of a loader that knew the file in advance."""
    from vitdata.data import selfid

    root = tmp_path / "train"
    selfid.write_imagefolder(str(root), 32, num_classes=4, size=48)
    cfg = LoaderConfig(data=str(root), batch_size=8, image_size=32, backend="dali", seed=2, on_error="skip",
                       output=OutputConfig(device="cuda"), augment=AugmentConfig(scale=(0.5, 1.0), randaug=True))
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    probe = create_loader(cfg)
    victim = int(probe.sampler.epoch_ids(0).reshape(-1)[13])
    path = probe.index.path(victim)
    probe.close()
    with open(path, "rb") as fh:
        data = bad_component(fh.read())      # the scan names a component the frame lacks: the decoder refuses it
    with open(path, "wb") as fh:
        fh.write(data)
    out = {}
    for name in ("found", "known"):   # the second loader reads the known-bad store the first one wrote
        loader = create_loader(cfg)
        try:
            out[name] = [(b.ids.tolist(), b.images.float().cpu()) for b in loader]
            assert [e["id"] for e in loader.quarantine.state()] == [victim]
            assert loader._backend.generation == 1
        finally:
            loader.close()
    assert [i for i, _ in out["found"]] == [i for i, _ in out["known"]]
    for (_, a), (_, b) in zip(out["found"], out["known"]):
        assert float((a - b).abs().max()) <= 1e-3
