"""The loader in a trainer written for a PyTorch DataLoader (timm's train.py): unpacking, set_epoch on the
sampler or the dataset, the attributes a trainer reads, the one-call loss, JSON state, oracle by name."""
import json
import warnings

import numpy as np
import pytest
import torch

from vitdata import ConfigError, LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig
from vitdata.oracle.difficulty import DifficultyOracle
from vitdata.loader.loss import per_sample_loss

PLAIN = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


def cfg_for(data, **kw):
    base = dict(data=data, batch_size=8, image_size=32, backend="torch", num_workers=0, augment=PLAIN)
    base.update(kw)
    return LoaderConfig(**base)


@pytest.fixture
def loader(tiny_data):
    ld = create_loader(cfg_for(tiny_data), oracle="weighted")
    yield ld
    ld.close()


def test_a_batch_unpacks_into_images_and_labels_and_keeps_ids_as_attributes(loader):
    batch = next(iter(loader))
    images, labels = batch
    assert images is batch.images and labels is batch.labels
    assert images.shape == (8, 3, 32, 32) and batch.ids.shape == (8,)


def test_dataloader_attributes_mean_what_pytorch_means(loader):
    assert len(loader) == 8                              # steps: 64 samples / batch 8
    assert len(loader.dataset) == 64 and loader.dataset.num_classes == 4
    assert loader.batch_size == 8
    assert len(loader.sampler) == 64                     # ids this rank reads per epoch
    assert len(loader.batch_sampler) == 8
    assert sum(len(b) for b in loader.batch_sampler) == 64
    assert loader.num_samples == 64 and loader.num_classes == 4


def test_set_epoch_on_the_sampler_or_the_dataset_is_the_loaders(loader):
    loader.sampler.set_epoch(3)
    assert loader.epoch == 3 and loader.sampler.epoch == 3
    ids3 = [i for b in loader for i in b.ids.tolist()]
    assert ids3 == loader.sampler.epoch_ids(3).reshape(-1).tolist()
    loader.dataset.set_epoch(5)
    assert loader.epoch == 5
    assert loader.oracle.epoch == 5 or loader.oracle.metrics[-1]["epoch"] == 4   # epochs 3 and 4 ended


def test_an_oracle_by_policy_name_is_sized_from_the_index(loader):
    assert isinstance(loader.oracle, DifficultyOracle)
    assert loader.oracle.num_samples == 64 and loader.oracle.policy.name == "weighted"


def test_an_oracle_of_the_wrong_size_is_refused_at_create_loader(tiny_data):
    with pytest.raises(ConfigError, match="num_samples=100.*holds 64"):
        create_loader(cfg_for(tiny_data), oracle=DifficultyOracle(100, device="cpu"))
    with pytest.raises(ConfigError, match="unknown oracle policy"):
        create_loader(cfg_for(tiny_data), oracle="hardest-first")


def test_the_loss_helper_reports_per_sample_losses_and_applies_loss_weights(loader):
    batch = next(iter(loader))
    logits = torch.randn(8, 4, requires_grad=True)
    batch.loss_weight = torch.linspace(1.0, 2.0, 8)
    loss = loader.loss(logits, batch)
    want = (torch.nn.functional.cross_entropy(logits, batch.labels, reduction="none") * batch.loss_weight).mean()
    assert torch.allclose(loss, want)
    loss.backward()
    assert loader.oracle.pending_reports == 8            # reported, not yet folded


def test_per_sample_loss_follows_the_criterion_and_soft_targets():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    soft = torch.nn.functional.one_hot(labels, 3).float() * 0.7 + 0.1
    assert torch.allclose(per_sample_loss(logits, soft, SoftTargetCrossEntropy()).mean(),
                          SoftTargetCrossEntropy()(logits, soft))
    assert torch.allclose(per_sample_loss(logits, labels, LabelSmoothingCrossEntropy(0.1)).mean(),
                          LabelSmoothingCrossEntropy(0.1)(logits, labels))
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    assert torch.allclose(per_sample_loss(logits, labels, ce).mean(), ce(logits, labels))
    with pytest.raises(ConfigError, match="reduction='none'"):
        per_sample_loss(logits, labels, lambda x, y: torch.nn.functional.cross_entropy(x, y))


def test_planned_steps_are_known_at_start_up(tiny_data):
    ld = create_loader(cfg_for(tiny_data), oracle="weighted")
    try:
        assert ld.planned_steps(3) == [8, 8, 8]
    finally:
        ld.close()


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_state_with_an_oracle_round_trips_through_json(tiny_data, backend):
    cfg = cfg_for(tiny_data, backend=backend, num_threads=1)
    a = create_loader(cfg, oracle="weighted")
    b = create_loader(cfg, oracle="weighted")
    try:
        for batch in a:
            a.loss(torch.randn(len(batch.ids), 4), batch)
        a.set_epoch(1)
        it = iter(a)
        for _ in range(3):
            batch = next(it)
            a.loss(torch.randn(len(batch.ids), 4), batch)
        text = json.dumps(a.state_dict())
        b.load_state_dict(json.loads(text))
        assert json.dumps(b.state_dict()) == text
        rest_a = [x.ids.tolist() for x in it]
        rest_b = [x.ids.tolist() for x in b]
        assert rest_a == rest_b and len(rest_a) == len(a) - 3
        assert b.oracle.table_digest() == a.oracle.table_digest()      # pending reports restored on rank 0
        assert np.array_equal(b.sampler.plan.weights, a.sampler.plan.weights)
    finally:
        a.close()
        b.close()


def test_a_dali_loader_with_randaugment_warns_nothing_deprecated(tiny_data):
    cfg = LoaderConfig(data=tiny_data, batch_size=8, image_size=32, backend="dali", num_workers=0, num_threads=1,
                       augment=AugmentConfig(randaug=True, randaug_num_ops=2))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loader = create_loader(cfg)
        try:
            next(iter(loader))
        finally:
            loader.close()
    deprecated = [str(w.message)[:120] for w in seen if issubclass(w.category, DeprecationWarning)
                  and "experimental" in str(w.message)]
    assert not deprecated, deprecated
