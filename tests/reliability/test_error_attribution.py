"""Under prefetch (depth 1 and 4, 2 workers, both backends) each DataError names the bad sample itself,
at its own step, and the step's good samples still come (docs/reliability.md A4).

Figures are printed; run with ``pytest -s`` to see them."""
import pytest

from vitdata import DataError, LoaderConfig, create_loader
from vitdata.data import selfid
import badinputs
from .conftest import FULL_VIEW

# Worker pools for each of 4 cases: deselected by `make test-quick`.
pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def a4_data(tmp_path_factory):
    """96 good 16 px JPEGs, then the samples at epoch-0 positions (step 10, slot 1) and (step 12, slot 2) of
    a batch-4 training order made bad: the second one lies inside a depth-4 prefetch window of the first."""
    root = tmp_path_factory.mktemp("a4") / "train"
    selfid.write_imagefolder(str(root), 96, num_classes=4, size=16)
    probe = create_loader(LoaderConfig(data=str(root), batch_size=4, image_size=16, backend="torch", num_workers=0,
                                       augment=FULL_VIEW))
    order = probe.sampler.epoch_ids(0)
    targets = [(10, int(order[10, 1]), 3), (12, int(order[12, 2]), 15)]     # (step, id, kind)
    paths = {i: probe.index.path(i) for _, i, _ in targets}
    probe.close()
    for _, i, kind in targets:
        with open(paths[i], "wb") as f:
            f.write(badinputs.make_bytes(kind))
    return str(root), [(s, i, paths[i]) for s, i, _ in targets]


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("prefetch", [1, 4])
def test_with_prefetch_1_and_4_each_data_error_names_the_bad_sample_itself(a4_data, backend, prefetch):
    """docs/reliability.md A4 (error attribution under prefetch).

    on_error="raise", 2 workers: the DataError names the bad sample's id and path and comes at its own
    step, although with prefetch 4 the next bad sample was already read ahead. Iterating on gives the
    second one, again by its own id. The error takes only its own sample: the step's good samples still
    come, as a smaller batch (docs/reliability.md I2), so every step delivers."""
    data, targets = a4_data
    ld = create_loader(LoaderConfig(data=data, batch_size=4, image_size=16, backend=backend, num_workers=2,
                                    prefetch=prefetch, on_error="raise", augment=FULL_VIEW))
    seen, delivered = [], 0
    try:
        for _ in range(len(targets) + 1):
            try:
                for _b in ld:
                    delivered += 1
                break
            except DataError as e:
                seen.append((ld.position - 1, e.sample_id, e.path, e.reason, str(e)))
    finally:
        ld.close()
    assert [(s, i, p) for s, i, p, _, _ in seen] == targets, seen
    assert all(p in msg and f"sample {i}" in msg for _, i, p, _, msg in seen)
    assert delivered == len(ld)
    print(f"\nA4 {backend} prefetch {prefetch}: errors at (step, id, reason) "
          f"{[(s, i, r) for s, i, _, r, _ in seen]} == the bad samples {[(s, i) for s, i, _ in targets]}; "
          f"{delivered} steps delivered (those two without their bad sample)")
