"""Tiny self-identifying data for the benchmark tests, and an index cache kept out of the home directory."""
import pytest

from vitdata.data.selfid import write_imagefolder, write_shards


@pytest.fixture(scope="session", autouse=True)
def _index_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("VITDATA_CACHE", str(tmp_path_factory.mktemp("index-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data") / "folder"
    write_imagefolder(str(root), 24, num_classes=4, size=48)
    return root


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-data") / "shards"
    write_shards(str(root), 24, num_classes=4, size=48, per_shard=12)
    return root


# Small enough for a 2-core CPU: 32 px, batch 4, 1 warm-up batch, 2 windows of 2 batches.
TINY = ["--size", "32", "--batch-size", "4", "--steps", "2", "--windows", "2", "--warmup", "1",
        "--workers", "1", "--threads", "1"]
