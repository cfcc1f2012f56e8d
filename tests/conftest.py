"""Shared test setup: Triton interpreter on CPU, the `gpu` marker, and access to ../shared/data."""
import os
import sys
from pathlib import Path

import pytest

# Triton runs on CPU only through its interpreter, which must be chosen before triton is imported.
if "triton" not in sys.modules:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VITDATA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real CIFAR-10 shards and ImageNet photos); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def imagenet_samples(shared_data) -> Path:
    p = shared_data / "imagenet-samples"
    if not p.is_dir():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="session")
def cifar10_shards(shared_data) -> Path:
    p = shared_data / "cifar10"
    if not list(p.glob("train-*.tar")):
        pytest.skip(f"no CIFAR-10 shards in {p}")
    return p
