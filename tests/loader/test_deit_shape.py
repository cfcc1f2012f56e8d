"""vitdata in a trainer shaped like DeiT's main.py + engine.py (facebookresearch/deit, which the seed papers' code
bases fork), switched with the README's five main.py lines: the loop below is written after that shape (its
own code): an argparse namespace with DeiT's option names, Mixup, a distillation loss that calls its base
criterion, ``criterion(samples, outputs, targets)`` in the epoch, ``sampler.set_epoch`` only when distributed,
a checkpoint dict holding ``args``, and resume at ``checkpoint['epoch'] + 1``."""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import vitdata
from vitdata.data import selfid

EPOCHS = 3


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("deit")
    selfid.write_imagefolder(str(root / "train"), 64, num_classes=4, size=32)
    selfid.write_imagefolder(str(root / "val"), 16, num_classes=4, size=32)
    return str(root)


def deit_namespace(data_path, output_dir, **kw) -> argparse.Namespace:
    """DeiT's option names and defaults, sized down (no --dataset / --data-dir: --data-path and --data-set)."""
    ns = dict(batch_size=8, epochs=EPOCHS, input_size=32, color_jitter=0.3, aa=None, smoothing=0.1,
              train_interpolation="bicubic", repeated_aug=False, ThreeAugment=False, src=False, reprob=0.0,
              mixup=0.8, cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
              data_path=data_path, data_set="IMNET", device="cpu", seed=0, eval_crop_ratio=0.875, num_workers=0,
              output_dir=str(output_dir), resume="", start_epoch=0, distributed=False, bce_loss=False,
              distillation_type="soft", distillation_alpha=0.5, distillation_tau=1.0)
    ns.update(kw)
    return argparse.Namespace(**ns)


class SoftDistillation(torch.nn.Module):
    """The shape of DeiT's DistillationLoss: ``(inputs, outputs, labels)``, base criterion plus a teacher term."""

    def __init__(self, base_criterion, teacher, alpha, tau):
        super().__init__()
        self.base_criterion, self.teacher, self.alpha, self.tau = base_criterion, teacher, alpha, tau

    def forward(self, inputs, outputs, labels):
        base = self.base_criterion(outputs, labels)
        with torch.no_grad():
            t = self.teacher(inputs)
        kd = F.kl_div(F.log_softmax(outputs / self.tau, -1), F.log_softmax(t / self.tau, -1), reduction="batchmean",
                      log_target=True) * self.tau ** 2
        return base * (1 - self.alpha) + kd * self.alpha


def one_epoch(model, criterion, data_loader, optimizer, mixup_fn, device, seen):
    model.train()
    for samples, targets in data_loader:                     # engine.py, unchanged
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        samples, targets = mixup_fn(samples, targets)
        outputs = model(samples)
        loss = criterion(samples, outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.append(data_loader.last_batch.ids.tolist())


def evaluate(data_loader, model):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, target in data_loader:
            correct += int((model(images).argmax(-1) == target).sum())
            total += len(target)
    return correct, total


def main(args, stop=EPOCHS):
    """main.py's order: data loaders, mixup, model, optimizer, criterion, distillation, resume, epochs."""
    torch.manual_seed(args.seed)
    data_loader_train, data_loader_val = vitdata.loaders_from_args(args)          # main.py line 2
    args.nb_classes = data_loader_train.num_classes
    mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                     num_classes=args.nb_classes)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, args.nb_classes))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, args.nb_classes)).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = SoftTargetCrossEntropy()
    criterion = data_loader_train.criterion(criterion)                             # main.py line 3
    criterion = SoftDistillation(criterion, teacher, args.distillation_alpha, args.distillation_tau)
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        args.start_epoch = checkpoint["epoch"] + 1
        data_loader_train.resume(checkpoint, args.start_epoch)                   # main.py line 4
    record = {"ids": {}, "eval": {}}
    for epoch in range(args.start_epoch, stop):
        if args.distributed:
            data_loader_train.sampler.set_epoch(epoch)
        seen = []
        np.random.seed(100 + epoch)                                 # timm's Mixup draws from NumPy's global RNG
        one_epoch(model, criterion, data_loader_train, optimizer, mixup_fn, "cpu", seen)
        record["ids"][epoch] = seen
        args.vitdata_loader = data_loader_train.state_dict()                      # main.py line 5
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "args": args},
                   os.path.join(args.output_dir, "checkpoint.pth"))
        record["eval"][epoch] = evaluate(data_loader_val, model)
    record["table"] = data_loader_train.oracle.table_digest()
    record["weights"] = [float(p.detach().double().sum()) for p in model.parameters()]
    data_loader_train.close()
    data_loader_val.close()
    return record


@pytest.mark.heavy
def test_a_deit_shaped_trainer_switched_by_five_main_py_lines_resumes_like_the_uninterrupted_run(
        data_path, tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_ORACLE", "prune-easy")
    for run in ("full", "cut"):
        os.makedirs(tmp_path / run)
    with pytest.warns(UserWarning, match="color_jitter 0.3"):    # DeiT's colour jitter without --aa: named
        full = main(deit_namespace(data_path, tmp_path / "full"), EPOCHS)
    main(deit_namespace(data_path, tmp_path / "cut"), 2)
    resumed = main(deit_namespace(data_path, tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint.pth")))
    assert list(resumed["ids"]) == [2]
    assert resumed["ids"][2] == full["ids"][2]                   # the oracle's plan came back with the checkpoint
    assert resumed["table"] == full["table"] and resumed["weights"] == full["weights"]
    assert resumed["eval"][2] == full["eval"][2] and full["eval"][2][1] == 16
    assert len(full["ids"][0]) == 8 and len(full["ids"][1]) < 8  # prune-easy shortened epoch 1


def test_with_an_oracle_the_distillation_loss_keeps_its_teacher_term(data_path, tmp_path, monkeypatch):
    monkeypatch.setenv("VITDATA_ORACLE", "weighted")
    args = deit_namespace(data_path, tmp_path, color_jitter=0.0)
    train, val = vitdata.loaders_from_args(args, backend="torch")
    try:
        teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
        plain = SoftDistillation(SoftTargetCrossEntropy(), teacher, 0.5, 1.0)
        switched = SoftDistillation(train.criterion(SoftTargetCrossEntropy()), teacher, 0.5, 1.0)
        samples, targets = next(iter(train))
        soft = F.one_hot(targets, 4).float() * 0.9 + 0.025
        outputs = model(samples)
        assert torch.allclose(switched(samples, outputs, soft), plain(samples, outputs, soft))
        assert train.oracle.pending_reports == len(targets)                  # the base loss, per sample, reached the oracle
        assert val is not None and len(val.dataset) == 16
    finally:
        train.close()
        val.close()
