"""Oracle state: plain data, exact round trip, refusal of mismatches, and kill-and-resume mid-epoch
(docs/reliability.md C1/C2: reports after the last checkpoint are dropped; the resumed run equals one that never
saw them)."""
import io
import json

import numpy as np
import pytest
import torch

from vitdata.errors import StateError
from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.data.sampler import Sampler

N, BATCH = 240, 12


def steps(oracle, sampler, epoch):
    """The (ids, losses) a trainer reports at each step of ``epoch``: a pure function of (plan, epoch, step)."""
    sampler.set_plan(oracle.plan)
    base = torch.linspace(0.01, 3.0, N)
    out = []
    for step, row in enumerate(sampler.epoch_ids(epoch)):
        ids = torch.from_numpy(row.copy())
        gen = torch.Generator().manual_seed(1000 * epoch + step)
        out.append((ids, base[ids] * (0.9 ** epoch) + 0.1 * torch.rand(ids.shape, generator=gen)))
    return out


def feed(oracle, batch):
    ids, losses = batch
    oracle.report(ids, losses, correct=losses < 1.0)


def to_files(state):
    """Serialise like a checkpoint would: JSON for everything but arrays, one .npz (no pickle) for arrays."""
    arrays = {}

    def strip(x, path):
        if isinstance(x, np.ndarray):
            arrays[path] = x
            return {"__array__": path}
        if isinstance(x, dict):
            return {k: strip(v, f"{path}/{k}") for k, v in x.items()}
        if isinstance(x, list):
            return [strip(v, f"{path}/{i}") for i, v in enumerate(x)]
        assert x is None or isinstance(x, (str, int, float, bool)), f"{path}: {type(x).__name__}"
        return x

    doc = json.dumps(strip(state, ""), allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, **{k.replace("/", "|"): v for k, v in arrays.items()})
    return doc, buf.getvalue()


def from_files(doc, blob):
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k.replace("|", "/"): z[k] for k in z.files}

    def fill(x):
        if isinstance(x, dict):
            return arrays[x["__array__"]] if set(x) == {"__array__"} else {k: fill(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fill(v) for v in x]
        return x

    return fill(json.loads(doc))


@pytest.mark.parametrize("policy,kw", [("weighted", {"floor": 0.3}), ("prune-easy", {"ratio": 0.5}),
                                       ("data-centric", {"target_easy": 0.2})])
def test_kill_and_resume_mid_epoch_gives_the_uninterrupted_plan_and_order(policy, kw):
    epochs, kill_epoch, kill_step = 3, 2, 7
    # Uninterrupted run.
    a, sa = DifficultyOracle(N, policy, device="cpu", seed=5, **kw), Sampler(N, BATCH, seed=5)
    for e in range(epochs):
        for batch in steps(a, sa, e):
            feed(a, batch)
        a.end_epoch(e)
    sa.set_plan(a.plan)

    # Interrupted run: checkpoint after kill_step steps of kill_epoch, report a few more, "crash".
    b, sb = DifficultyOracle(N, policy, device="cpu", seed=5, **kw), Sampler(N, BATCH, seed=5)
    for e in range(kill_epoch):
        for batch in steps(b, sb, e):
            feed(b, batch)
        b.end_epoch(e)
    todo = steps(b, sb, kill_epoch)
    for batch in todo[:kill_step]:
        feed(b, batch)
    ckpt = to_files(b.state_dict())
    for batch in todo[kill_step:kill_step + 3]:
        feed(b, batch)                       # lost in the crash
    del b

    c, sc = DifficultyOracle(N, policy, device="cpu", seed=5, **kw), Sampler(N, BATCH, seed=5)
    c.load_state_dict(from_files(*ckpt))
    for batch in todo[kill_step:]:
        feed(c, batch)
    c.end_epoch(kill_epoch)
    sc.set_plan(c.plan)

    assert c.table_digest() == a.table_digest()
    assert (a.plan is None and c.plan is None) or c.plan.digest() == a.plan.digest()
    assert c.metrics == a.metrics
    assert np.array_equal(sc.epoch_ids(epochs), sa.epoch_ids(epochs))


def test_state_round_trip_is_exact_and_plain():
    a = DifficultyOracle(N, "prune-easy", device="cpu", ratio=0.4)
    s = Sampler(N, BATCH)
    for batch in steps(a, s, 0):
        feed(a, batch)
    a.end_epoch(0)
    for batch in steps(a, s, 1)[:5]:
        feed(a, batch)
    state = a.state_dict()
    doc, blob = to_files(state)               # asserts every leaf is JSON or an ndarray
    b = DifficultyOracle(N, "prune-easy", device="cpu", ratio=0.4)
    b.load_state_dict(from_files(doc, blob))
    assert b.table_digest() == a.table_digest()
    assert b.plan.digest() == a.plan.digest() and b.epoch == a.epoch == 1 and b.metrics == a.metrics
    ids = torch.arange(N)
    assert torch.equal(b.loss_weights(ids), a.loss_weights(ids))
    assert all(v.dtype != object for v in state["table"].values())


def test_loading_refuses_another_size_policy_configuration_or_newer_format():
    state = DifficultyOracle(N, "weighted", device="cpu").state_dict()
    with pytest.raises(StateError, match="num_samples"):
        DifficultyOracle(N + 1, "weighted", device="cpu").load_state_dict(state)
    with pytest.raises(StateError, match="policy"):
        DifficultyOracle(N, "uniform", device="cpu").load_state_dict(state)
    with pytest.raises(StateError, match="alpha"):
        DifficultyOracle(N, "weighted", device="cpu", alpha=0.9).load_state_dict(state)
    with pytest.raises(StateError, match="floor"):
        DifficultyOracle(N, "weighted", device="cpu", floor=0.2).load_state_dict(state)
    with pytest.raises(StateError, match="newer"):
        DifficultyOracle(N, "weighted", device="cpu").load_state_dict({**state, "format_version": 99})


def test_skipped_ids_keep_their_entries_and_weight():
    o = DifficultyOracle(N, "weighted", device="cpu")
    o.report(torch.arange(N), torch.linspace(0.0, 2.0, N))
    o.end_epoch(0)
    before = o.table_arrays()
    w0 = o.plan.weights[7]
    ids = torch.arange(N)
    ids[7] = -1                                # the loader skipped sample 7 and reports no loss for it
    o.report(ids, torch.linspace(0.0, 2.0, N))
    o.end_epoch(1)
    after = o.table_arrays()
    assert all(after[k][7] == before[k][7] for k in after if k != "last_epoch") and after["seen"][7] == 1
    assert o.plan.weights[7] == w0
