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


# ---- the drop-in for timm-family trainers: the criterion, the no-report warning, resume from their checkpoints

def test_the_criterion_reports_per_sample_losses_and_a_distillation_task_keeps_its_term(tiny_data):
    import timm
    from timm.task import LogitDistillationTask

    torch.manual_seed(0)
    student = timm.create_model("test_vit", pretrained=False, num_classes=4, img_size=32)
    teacher = timm.create_model("test_vit", pretrained=False, num_classes=4, img_size=32)
    task = LogitDistillationTask(student_model=student, teacher_model=teacher, criterion=torch.nn.CrossEntropyLoss(),
                                 distill_loss_weight=0.5, task_loss_weight=1.0, temperature=2.0,
                                 device=torch.device("cpu"), verbose=False)
    ld = create_loader(cfg_for(tiny_data), oracle="weighted")
    try:
        images, labels = next(iter(ld))
        before = task(images, labels)
        task.criterion = ld.criterion(task.criterion)          # the README's line for timm's train.py
        after = task(images, labels)
        assert torch.allclose(after["task_loss"], before["task_loss"])
        assert torch.allclose(after["kd_loss"], before["kd_loss"])
        assert torch.allclose(after["loss"], before["loss"]) and float(after["kd_loss"]) > 0
        assert ld.oracle.pending_reports == 8                                  # the task loss, per sample, reached the oracle
        ld.last_batch.loss_weight = torch.full((8,), 2.0)          # a plan's loss weights scale the task term only
        weighted = task(images, labels)
        assert torch.allclose(weighted["loss"], 2 * before["task_loss"] + 0.5 * before["kd_loss"])
    finally:
        ld.close()


def test_without_an_oracle_the_criterion_is_the_trainers_own_and_a_wrong_batch_is_refused(tiny_data):
    from timm.loss import BinaryCrossEntropy

    plain = create_loader(cfg_for(tiny_data))
    with_oracle = create_loader(cfg_for(tiny_data), oracle="uniform")
    try:
        bce = BinaryCrossEntropy(smoothing=0.1)
        images, labels = next(iter(plain))
        logits = torch.randn(8, 4)
        assert torch.equal(plain.criterion(bce)(logits, labels), bce(logits, labels))   # any criterion, unchanged
        next(iter(with_oracle))
        with pytest.raises(ConfigError, match="called with 5 outputs while the loader's last batch is a batch of 8"):
            with_oracle.criterion()(torch.randn(5, 4), labels[:5])
    finally:
        plain.close()
        with_oracle.close()


def test_an_epoch_iterated_with_an_oracle_and_no_loss_reported_warns_once_naming_the_cause(tiny_data):
    ld = create_loader(cfg_for(tiny_data), oracle="weighted")
    try:
        with pytest.warns(UserWarning, match=r"epoch 0 was iterated with an oracle \(weighted\).*task.criterion = "
                                             r"loader_train.criterion\(task.criterion\)"):
            for _ in ld:
                pass
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in ld:                                           # once per loader
                pass
        reported = create_loader(cfg_for(tiny_data), oracle="weighted")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for batch in reported:
                reported.loss(torch.randn(len(batch.ids), 4), batch)
        reported.close()
    finally:
        ld.close()


def _epoch(ld):
    """One epoch with losses that depend on the ids only (a resumed run reports what the original did)."""
    ids = []
    for batch in ld:
        ld.loss(torch.nn.functional.one_hot(batch.ids % 3, 4).float() * 3, batch)
        ids.append(batch.ids.tolist())
    return ids


def test_each_checkpoint_carries_its_epochs_loader_state_and_resume_loads_that_one(tiny_data, tmp_path):
    import argparse

    a = create_loader(cfg_for(tiny_data), oracle="prune-easy")
    paths = []
    try:
        for epoch in range(3):
            a.set_epoch(epoch)
            ids = _epoch(a)
            args = argparse.Namespace(model="m", vitdata_loader=a.state_dict())       # the README's save line
            paths.append(tmp_path / f"checkpoint-{epoch}.pth.tar")
            torch.save({"epoch": epoch, "args": args, "version": 2}, paths[-1])
        with torch.serialization.safe_globals([argparse.Namespace]):               # timm's own loading
            assert torch.load(paths[0], weights_only=True)["args"].vitdata_loader["epoch"] == 0
        b = create_loader(cfg_for(tiny_data), oracle="prune-easy")
        assert b.resume(str(paths[1]), 2) is True                  # checkpoint-1, though checkpoint-2 came later
        assert _epoch(b) == ids and b.oracle.table_digest() == a.oracle.table_digest()
        b.close()
        for path, epoch, why in ((paths[0], 2, "holds the loader state after epoch 0, not the end of epoch 1"),
                                 (tmp_path / "plain.pth.tar", 1, "holds no vitdata loader state")):
            torch.save({"epoch": epoch - 1, "args": argparse.Namespace(model="m")}, tmp_path / "plain.pth.tar")
            c = create_loader(cfg_for(tiny_data), oracle="prune-easy")
            with pytest.warns(UserWarning, match=f"{why}.*starts epoch {epoch} afresh"):
                assert c.resume(str(path), epoch) is False
            assert c.epoch == epoch
            c.close()
    finally:
        a.close()


def test_a_constant_schedule_resumes_with_a_longer_run_and_a_curriculum_is_refused_naming_the_flag(tiny_data):
    from vitdata import StateError
    from vitdata.loader.config import ScheduleConfig

    def state(**kw):
        ld = create_loader(cfg_for(tiny_data, **kw))
        _epoch(ld)
        s = ld.state_dict()
        ld.close()
        return s

    longer = create_loader(cfg_for(tiny_data, schedule=ScheduleConfig(epochs=4)))
    longer.load_state_dict(state(schedule=ScheduleConfig(epochs=2)))
    assert longer.epoch == 0
    longer.close()
    saved = state(schedule=ScheduleConfig(name="linear", epochs=2))
    flagged = create_loader(cfg_for(tiny_data, schedule=ScheduleConfig(name="linear", epochs=4),
                                    flags={"schedule.epochs": "--epochs"}))
    try:
        with pytest.raises(StateError, match=r"'linear' was laid out over 2 epochs in the saved run and over 4 here "
                                             r"\(--epochs\).*resume with --epochs 2"):
            flagged.load_state_dict(saved)
    finally:
        flagged.close()


def test_timm_factories_answer_the_calls_timms_train_py_makes(tiny_data, tmp_path):
    import argparse
    import os

    import vitdata
    from vitdata.data import selfid

    root = os.path.dirname(tiny_data)
    if not os.path.isdir(os.path.join(root, "val")):
        selfid.write_imagefolder(os.path.join(root, "val"), 16, num_classes=4, size=32)
    args = argparse.Namespace(data=None, data_dir=root, dataset="", train_split="train", val_split="val", img_size=32,
                              batch_size=8, validation_batch_size=None, epochs=2, workers=0, seed=0, device="cpu",
                              aa=None, no_aug=True, prefetcher=False, model_kwargs={})
    create_dataset, create_loader_ = vitdata.timm_factories(args, backend="torch")
    dataset_train = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True,
                                   class_map="", download=False, batch_size=8, seed=0, repeats=0)
    loader_train = create_loader_(dataset_train, input_size=(3, 32, 32), batch_size=8, is_training=True, no_aug=True,
                                  re_prob=0.0, mean=(0.5,) * 3, device=torch.device("cpu"), use_prefetcher=False)
    dataset_eval = create_dataset(args.dataset, root=args.data_dir, split=args.val_split, is_training=False)
    loader_eval = create_loader_(dataset_eval, batch_size=8, is_training=False, crop_pct=0.9)
    try:
        assert loader_train.train and len(loader_train.dataset) == 64 and len(loader_train) == 8
        assert not loader_eval.train and len(loader_eval.dataset) == 16 and loader_eval.oracle is None
        with pytest.raises(ConfigError, match="batch 16"):
            create_loader_(dataset_train, batch_size=16, is_training=True)
        with pytest.raises(ConfigError, match="did not make"):
            create_loader_(object(), batch_size=8, is_training=True)
    finally:
        loader_train.close()
        loader_eval.close()
