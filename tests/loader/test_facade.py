"""The DataLoader-shaped face (``loader.sampler``, ``loader.dataset``, ``loader.batch_sampler``) faces outward
only: the loader's own code never goes through it, and ``loader.sampler.set_epoch`` means one thing."""
import pytest

from vitdata import LoaderConfig, create_loader
from vitdata.loader import compat
from vitdata.loader.config import AugmentConfig, ScheduleConfig

PLAIN = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


@pytest.fixture
def built(monkeypatch):
    """How many facade objects were built, per class."""
    counts = {}
    for cls in (compat.LoaderSampler, compat.LoaderDataset, compat.BatchSampler):
        def counting(self, *args, _init=cls.__init__, _name=cls.__name__):
            counts[_name] = counts.get(_name, 0) + 1
            _init(self, *args)
        monkeypatch.setattr(cls, "__init__", counting)
    return counts


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_the_loader_never_builds_its_dataloader_facade_for_itself(tiny_data, built, backend):
    cfg = LoaderConfig(data=tiny_data, batch_size=8, image_size=32, backend=backend, num_workers=0,
                       num_threads=1, augment=PLAIN, schedule=ScheduleConfig(epochs=2))
    loader = create_loader(cfg, oracle="weighted")
    try:
        len(loader)
        for epoch in range(2):
            loader.set_epoch(epoch)
            for batch in loader:
                loader.loss(batch.images.flatten(1)[:, :4], batch)
        state = loader.state_dict()
        loader.load_state_dict(state)
        loader.planned_steps(2)
        loader.skipped()
        repr(loader)
        assert built == {}, f"the loader built its own facade: {built}"
        loader.sampler.epoch
        assert built == {"LoaderSampler": 1}
    finally:
        loader.close()


def test_sampler_set_epoch_takes_the_epoch_only_and_the_samplers_epoch_is_the_loaders(tiny_data):
    cfg = LoaderConfig(data=tiny_data, batch_size=8, image_size=32, backend="torch", num_workers=0, augment=PLAIN)
    loader = create_loader(cfg)
    try:
        with pytest.raises(TypeError):
            loader.sampler.set_epoch(1, 3)        # no second meaning: a position is the loader's business
        loader.set_epoch(4)
        assert loader.sampler.epoch == 4 and loader.sampler.position == 0
        next(iter(loader))
        assert (loader.sampler.epoch, loader.sampler.position) == (4, 1) == (loader.epoch, loader.position)
    finally:
        loader.close()
