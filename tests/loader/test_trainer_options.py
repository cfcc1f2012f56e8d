"""What a training loop hands the loader instead of building it itself: the own labels of a mixed batch
(loader.loss), the options of a policy named at create_loader, the schedule by name; and a train split too
small for one step, refused by name."""
import pytest
import torch

from vitdata import ConfigError, LoaderConfig, ScheduleConfig, create_loader
from vitdata.loader.config import AugmentConfig
from vitdata.oracle.difficulty import own_label_p

PLAIN = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


def cfg_for(data, **kw):
    base = dict(data=data, batch_size=8, image_size=32, backend="torch", num_workers=0, augment=PLAIN)
    base.update(kw)
    return LoaderConfig(**base)


def test_under_mixup_the_oracle_gets_each_samples_own_label_probability(tiny_data):
    ld = create_loader(cfg_for(tiny_data), oracle="data-centric")
    try:
        batch = next(iter(ld))
        torch.manual_seed(0)
        logits = torch.randn(8, 4)
        own = batch.labels
        partner = own.flip(0)
        soft = 0.7 * torch.nn.functional.one_hot(own, 4).float() + 0.3 * torch.nn.functional.one_hot(partner, 4).float()
        ld.loss(logits, batch, target=soft, own_labels=own)
        reported = ld.oracle._pending._buf["p"][:8]
        assert torch.allclose(reported, own_label_p(logits, own, soft))
    finally:
        ld.close()


def test_create_loader_passes_policy_options_and_prune_easy_anneals_over_the_schedules_epochs(tiny_data):
    ld = create_loader(cfg_for(tiny_data), oracle="data-centric", oracle_options={"mix_lever": True})
    try:
        assert ld.oracle.policy.mix_lever
    finally:
        ld.close()
    ld = create_loader(cfg_for(tiny_data, schedule=ScheduleConfig(name="switches", epochs=12,
                                                                  kwargs={"patch_size": 8})), oracle="prune-easy")
    try:
        assert ld.oracle.policy.epochs == 12
        assert ld.schedule.epochs == 12 and ld.planned_steps() == [8] * 12
    finally:
        ld.close()


def test_a_train_split_smaller_than_one_step_is_refused_naming_the_batch_size(tiny_data):
    with pytest.raises(ConfigError, match="64 ids cannot fill one global batch of 128") as e:
        create_loader(cfg_for(tiny_data, batch_size=128))
    assert "batch_size" in e.value.fields
    create_loader(cfg_for(tiny_data, batch_size=128), split="eval").close()   # evaluation keeps its partial batch
