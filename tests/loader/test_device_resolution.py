"""Device resolution on a GPU host, pinned on CPU: CUDA is faked in a subprocess (``torch.cuda`` queries
patched) and the ``device_id`` that DALI's pipeline builder receives is captured instead of building a GPU
pipeline. Also: a GPU host without DALI falls back to the torch backend, and host defaults."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

FAKE_CUDA = textwrap.dedent("""
    import json, os, sys
    import torch

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 2
    torch.cuda.current_device = lambda: int(os.environ.get("FAKE_CURRENT", "0"))
    torch.cuda.is_initialized = lambda: os.environ.get("FAKE_CURRENT") is not None
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
""")

CAPTURE = FAKE_CUDA + textwrap.dedent("""
    import vitdata.pipelines.graphs as graphs
    from vitdata import create_loader, LoaderConfig, OutputConfig

    class Captured(Exception):
        pass

    seen = {}

    def build_pipeline(source, spec, **kw):
        seen.update(device_id=kw["device_id"], hw_decoder_load=spec.hw_decoder_load)
        raise Captured

    graphs.build_pipeline = build_pipeline
    spelling = json.loads(sys.argv[2])
    device = torch.device(spelling["device"]) if spelling.get("torch_device") else spelling["device"]
    loader = create_loader(LoaderConfig(data=sys.argv[1], batch_size=4, image_size=32, backend="dali",
                                        num_workers=0, output=OutputConfig(device=device)))
    try:
        next(iter(loader))
    except Captured:
        pass
    print(json.dumps(dict(seen, property=loader.dali_device_id, output=str(loader.device))))
""")


def _run(code: str, *args: str, env: dict | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "FAKE_CURRENT")}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env={**base, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("spelling, env, expected", [
    ({"device": "cuda"}, {"LOCAL_RANK": "1"}, 1),
    ({"device": "cuda"}, {"LOCAL_RANK": "0"}, 0),
    ({"device": "cuda:1"}, {"LOCAL_RANK": "0"}, 1),
    ({"device": "auto"}, {"LOCAL_RANK": "1"}, 1),
    ({"device": "cuda", "torch_device": True}, {"LOCAL_RANK": "1"}, 1),
    ({"device": "cuda:1", "torch_device": True}, {}, 1),
    ({"device": "cuda"}, {"FAKE_CURRENT": "1"}, 1),   # CUDA initialised: the trainer's current device
])
def test_every_spelling_of_a_gpu_gives_dali_this_ranks_device_id(tiny_data, spelling, env, expected):
    got = json.loads(_run(CAPTURE, tiny_data, json.dumps(spelling), env=env))
    assert got["device_id"] == expected and got["property"] == expected
    assert got["output"] == f"cuda:{expected}"
    # an H100/H200-class GPU (sm_90) has the hardware JPEG decoder: part of the JPEGs go to it
    assert got["hw_decoder_load"] == pytest.approx(0.65)


def test_dali_device_id_is_none_when_dali_runs_on_the_cpu_or_the_backend_is_torch(tiny_data):
    from vitdata import LoaderConfig, OutputConfig, create_loader

    for backend in ("dali", "torch"):
        loader = create_loader(LoaderConfig(data=tiny_data, batch_size=4, image_size=32, backend=backend,
                                            num_workers=0, output=OutputConfig(device="cpu")))
        assert loader.dali_device_id is None
        loader.close()


NO_DALI = FAKE_CUDA + textwrap.dedent("""
    sys.modules["nvidia.dali"] = None          # import nvidia.dali raises ImportError
    from vitdata import create_loader, LoaderConfig
    loader = create_loader(LoaderConfig(data=sys.argv[1], batch_size=4, image_size=32, num_workers=0))
    print(json.dumps({"backend": loader.backend_name, "device": str(loader.device), "id": loader.dali_device_id,
                      "graphs": "vitdata.pipelines.graphs" in sys.modules}))
""")


def test_a_gpu_host_without_dali_builds_the_torch_backend(tiny_data):
    got = json.loads(_run(NO_DALI, tiny_data, env={"LOCAL_RANK": "1"}))
    assert got == {"backend": "torch", "device": "cuda:1", "id": None, "graphs": False}


def test_a_gpu_spelling_without_cuda_is_refused_naming_the_field(tiny_data):
    from vitdata import ConfigError, LoaderConfig, create_loader
    from vitdata.loader.config import OutputConfig

    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError) as e:
        create_loader(LoaderConfig(data=tiny_data, batch_size=4, image_size=32, output=OutputConfig(device="cuda")))
    assert e.value.fields == ("output.device",)


HOST = textwrap.dedent("""
    import json, os
    os.sched_getaffinity = lambda pid: set(range(16))
    from vitdata.loader import host
    print(json.dumps([host.default_threads("dali"), host.default_workers("dali"), host.default_workers("torch")]))
""")


@pytest.mark.parametrize("local_world, expected", [("1", [8, 8, 15]), ("4", [2, 2, 3]), ("8", [2, 2, 2])])
def test_threads_and_workers_default_to_this_ranks_share_of_the_cores(local_world, expected):
    assert json.loads(_run(HOST, env={"LOCAL_WORLD_SIZE": local_world})) == expected


def test_host_defaults_on_two_cores_keep_two_threads_and_two_workers(tiny_data, monkeypatch):
    from vitdata import LoaderConfig, create_loader

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for backend in ("dali", "torch"):
        loader = create_loader(LoaderConfig(data=tiny_data, batch_size=4, image_size=32, backend=backend))
        assert (loader.cfg.num_threads, loader.cfg.num_workers) == (2, 2)
        loader.close()


@pytest.mark.parametrize("cores, threads, workers, backend, expected", [
    (2, 3, 0, "dali", 1), (2, 2, 2, "dali", 1), (16, 4, 4, "dali", 8), (16, 8, 8, "dali", 1), (16, 8, 3, "torch", 13)])
def test_cpu_kernels_get_the_cores_that_decoding_leaves(monkeypatch, cores, threads, workers, backend, expected):
    from vitdata.loader import host

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert host.kernel_threads(threads, workers, backend) == expected


def test_intra_op_threads_caps_cpu_ops_inside_the_block_and_restores_the_setting_after():
    import torch

    from vitdata.loader.host import intra_op_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with intra_op_threads(torch.device("cpu"), 1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with intra_op_threads(torch.device("cpu"), 4):      # never raised above the caller's setting
            assert torch.get_num_threads() == 2
        with intra_op_threads(torch.device("cuda", 0), 1):  # GPU kernels: the host threads are not touched
            assert torch.get_num_threads() == 2
        with pytest.raises(KeyError), intra_op_threads(torch.device("cpu"), 1):
            raise KeyError("restored on the way out too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
