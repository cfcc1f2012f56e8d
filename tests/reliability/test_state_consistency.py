"""docs/reliability.md I6: a loader state whose fields disagree, or whose DALI
checkpoint is damaged, is refused at ``load_state_dict`` with a StateError naming the field."""
import base64
import copy
import json

import pytest

from vitdata import LoaderConfig, StateError, create_loader
from vitdata.data import selfid

from .conftest import FULL_VIEW


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("statecheck") / "train")
    selfid.write_imagefolder(root, 32, num_classes=2, size=16)
    return root


def _loader(data, backend):
    return create_loader(LoaderConfig(data=data, batch_size=4, image_size=16, backend=backend, num_workers=0,
                                      num_threads=1, augment=FULL_VIEW, seed=2))


def _state_after(data, backend, steps: int) -> dict:
    ld = _loader(data, backend)
    try:
        it = iter(ld)
        for _ in range(steps):
            next(it)
        return json.loads(json.dumps(ld.state_dict()))
    finally:
        ld.close()


def _refused(data, backend, state, field: str) -> StateError:
    ld = _loader(data, backend)
    try:
        with pytest.raises(StateError) as e:
            ld.load_state_dict(state)
    finally:
        ld.close()
    assert field in str(e.value), str(e.value)
    return e.value


@pytest.mark.parametrize("field, value", [("position", 5), ("epoch", 1)])
def test_an_edited_position_or_epoch_is_refused_where_the_dali_pipeline_stands_elsewhere(data, field, value):
    """I6: the DALI checkpoint records where its pipeline stands; a point edited away from it is refused."""
    state = _state_after(data, "dali", 3)
    state[field] = value
    _refused(data, "dali", state, field)


def test_a_torch_state_says_where_it_stands_once_so_an_edited_position_is_where_it_resumes(data):
    """I6: nothing repeats the position of a torch-backend state, so no copy of it can disagree: the state
    edited to step 5 resumes at step 5 of the same epoch, as the uninterrupted run's."""
    state = _state_after(data, "torch", 3)
    state["position"] = 5
    ld, ref = _loader(data, "torch"), _loader(data, "torch")
    try:
        ld.load_state_dict(state)
        assert [b.ids.tolist() for b in ld] == [b.ids.tolist() for b in ref][5:]
    finally:
        ld.close()
        ref.close()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_position_past_the_epoch_is_refused_at_load_time(data, backend):
    """I6: an out-of-range position is a StateError at load, not a ConfigError at the first batch."""
    state = _state_after(data, backend, 3)
    state["position"] = 99   # used to load, then fail at the first batch as a ConfigError
    _refused(data, backend, state, "position")


def test_an_edited_dali_epoch_is_a_state_error_not_a_decode_error(data):
    """I6 (item 13): an edited dali_epoch is refused at load, naming backend.dali_epoch."""
    state = _state_after(data, "dali", 3)
    state["backend"]["dali_epoch"] = 4
    _refused(data, "dali", state, "backend.dali_epoch")


@pytest.mark.parametrize("damage", ["base64_cut", "bytes_cut", "iteration_record"])
def test_a_damaged_dali_checkpoint_is_a_state_error(data, damage):
    """I6 (item 13): a damaged DALI checkpoint is a StateError naming the field, not binascii.Error/RuntimeError."""
    state = _state_after(data, "dali", 3)
    text = state["backend"]["checkpoint"]
    raw = base64.b64decode(text)
    if damage == "base64_cut":
        text = text[:-3]
    elif damage == "bytes_cut":
        text = base64.b64encode(raw[:len(raw) - 7]).decode()
    else:
        text = base64.b64encode(raw.replace(b'"iter": 3', b'"iter": 9')).decode()
    state["backend"]["checkpoint"] = text
    _refused(data, "dali", copy.deepcopy(state), "backend.")


def test_a_consistent_state_still_resumes(data):
    """I6: the checks refuse nothing that state_dict writes: mid-epoch, at an epoch's end, and after set_epoch."""
    ld = _loader(data, "dali")
    try:
        states = []
        it = iter(ld)
        next(it)
        states.append(json.loads(json.dumps(ld.state_dict())))
        for _ in it:
            pass
        states.append(json.loads(json.dumps(ld.state_dict())))
        ld.set_epoch(1)
        states.append(json.loads(json.dumps(ld.state_dict())))
    finally:
        ld.close()
    for st in states:
        other = _loader(data, "dali")
        try:
            other.load_state_dict(st)
            assert sum(len(b.ids) for b in other) in (28, 32)
        finally:
            other.close()
