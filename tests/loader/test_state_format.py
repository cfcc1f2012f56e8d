"""Loader states written by an earlier vitdata still resume (docs/reliability.md D5: format N-1 fixtures load).

``fixtures/state_format_1/`` holds states written by vitdata's loader state format 1, one per scenario
below, taken on a 32-image self-identifying ImageFolder tree. Each is loaded into a fresh loader of the same
configuration and must deliver the rest of the run exactly as an uninterrupted run does: the same ids
and, on CPU, the same pixels. A fixture was written on another machine, so its index fingerprint (a hash
over the data's absolute paths) is replaced by this tree's before loading; nothing else is touched.

To add the fixtures of the current format before a format change, run this file at the commit before
the change: ``python tests/loader/test_state_format.py tests/loader/fixtures/state_format_N``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from vitdata import LoaderConfig, StateError, create_loader
from vitdata.data import selfid
from vitdata.loader.config import AugmentConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A random crop and flip (stateful DALI ops whose RNG the checkpoint carries), no RandAugment (a fast build).
AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, randaug=False)


def _config(root: str, backend: str) -> LoaderConfig:
    return LoaderConfig(data=root, batch_size=4, image_size=16, backend=backend, num_workers=0, num_threads=1,
                        seed=2, augment=AUGMENT)


def _losses(ids: torch.Tensor) -> torch.Tensor:
    """A deterministic per-sample loss, so the oracle's plan is the same in every run."""
    return (ids % 7).float() / 7.0 + 0.1


def _take(loader, steps: int | None, report: bool) -> list:
    """``steps`` batches of the current epoch (None: the rest of it), reported to the oracle."""
    out = []
    for batch in loader:
        out.append(batch)
        if report:
            loader.report(batch.ids, _losses(batch.ids))
        if steps is not None and len(out) == steps:
            break
    return out


# name -> (backend, oracle policy, the path to the saved point, and the path after it). A path is a list of
# (epoch or None for "no set_epoch", steps or None for "to the end of the epoch").
SCENARIOS = {
    "dali_mid_epoch": ("dali", None, [(0, 3)], [(None, None), (1, 2)]),
    "dali_epoch_end": ("dali", None, [(0, None)], [(1, None)]),
    "dali_next_epoch_ready": ("dali", None, [(0, None), (1, 0)], [(None, None)]),
    "torch_weighted_mid_epoch": ("torch", "weighted", [(0, None), (1, 2)], [(None, None), (2, 3)]),
}


def _walk(loader, path, report: bool) -> list:
    batches = []
    for epoch, steps in path:
        if epoch is not None:
            loader.set_epoch(epoch)
        if steps != 0:
            batches += _take(loader, steps, report)
    return batches


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("stateformat") / "train")
    selfid.write_imagefolder(root, 32, num_classes=2, size=16)
    return root


def _fixture(fmt: int, name: str, loader) -> dict:
    state = json.loads((FIXTURES / f"state_format_{fmt}" / f"{name}.json").read_text())
    state["fingerprint"]["index"] = loader.index.fingerprint
    return state


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_format_1_state_resumes_the_run_exactly(data, name):
    backend, policy, before, after = SCENARIOS[name]
    reference = create_loader(_config(data, backend), oracle=policy)
    resumed = create_loader(_config(data, backend), oracle=policy)
    try:
        _walk(reference, before, report=policy is not None)
        want = _walk(reference, after, report=policy is not None)
        resumed.load_state_dict(_fixture(1, name, resumed))
        got = _walk(resumed, after, report=policy is not None)
        assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in want]
        for g, w in zip(got, want):
            assert torch.equal(g.images, w.images)
    finally:
        reference.close()
        resumed.close()


def test_a_format_1_state_whose_sampler_position_disagrees_is_refused_naming_it(data):
    loader = create_loader(_config(data, "dali"))
    try:
        state = _fixture(1, "dali_mid_epoch", loader)
        state["sampler"]["position"] = 5
        with pytest.raises(StateError, match="sampler.position"):
            loader.load_state_dict(state)
    finally:
        loader.close()


def test_a_format_1_state_marked_finished_mid_epoch_is_refused_naming_the_fields(data):
    loader = create_loader(_config(data, "dali"))
    try:
        state = _fixture(1, "dali_mid_epoch", loader)
        state["finished"] = True
        with pytest.raises(StateError, match="finished"):
            loader.load_state_dict(state)
    finally:
        loader.close()


def write_fixtures(directory: str) -> None:
    """Write each scenario's state at its saved point, in the format of the vitdata that runs this."""
    import tempfile

    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "train")
        selfid.write_imagefolder(root, 32, num_classes=2, size=16)
        for name, (backend, policy, before, _) in SCENARIOS.items():
            loader = create_loader(_config(root, backend), oracle=policy)
            try:
                _walk(loader, before, report=policy is not None)
                state = loader.state_dict()
            finally:
                loader.close()
            with open(os.path.join(directory, f"{name}.json"), "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
                f.write("\n")


if __name__ == "__main__":
    write_fixtures(sys.argv[1])
