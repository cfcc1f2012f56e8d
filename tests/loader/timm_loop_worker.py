"""One rank of a loop shaped like timm's train.py with the Task API (the version the README's diff patches):
``main()`` binds ``create_dataset, create_loader = vitdata.timm_factories(args, model)`` and calls both as timm
does, wraps ``task.criterion``, sets the epoch through ``loader.dataset`` and ``loader.sampler``, computes the
loss with ``task(input, target)['loss']``, checkpoints on rank 0 with ``args.vitdata_loader`` inside, and
resumes with ``loader_train.resume(path, resume_epoch)``. On gloo; writes this rank's record as JSON.

argv: rank world init_file data_root out_json ckpt_dir mode, mode = full (epochs 0..2) | first (epochs 0..1,
then stop as a crash would) | resume (rank 0's checkpoint, resume_epoch = its epoch + 1).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.task import ClassificationTask

import vitdata

EPOCHS = 3


def set_loader_epoch(loader, epoch):
    """timm's _set_loader_epoch: the dataset's set_epoch, then the batch sampler's or the sampler's."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def train_one_epoch(epoch, task, loader, optimizer, mixup_fn, record):
    np.random.seed(1000 + 10 * epoch + dist.get_rank())     # timm's Mixup draws from NumPy's global RNG
    task.get_trainable_module().train()
    last_idx = len(loader) - 1
    ids = []
    for batch_idx, (input, target) in enumerate(loader):
        input, target = mixup_fn(input, target)              # --no-prefetcher: mixing in the loop
        result = task(input, target)
        loss = result["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ids += loader.last_batch.ids.tolist()
        assert batch_idx <= last_idx and result["output"].shape[0] == input.shape[0]
    record["train"][str(epoch)] = {"ids": ids, "steps": last_idx + 1}


def validate(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for input, target in loader:
            correct += int((model(input).argmax(-1) == target).sum())
            total += len(target)
    t = torch.tensor([correct, total])
    dist.all_reduce(t)
    return t.tolist()


def timm_args(data_root) -> argparse.Namespace:
    """train.py's options this loop reads; ``vitdata_oracle`` is a key of timm's --config YAML."""
    return argparse.Namespace(data=None, data_dir=data_root, dataset="", train_split="train", val_split="train",
                              img_size=32, batch_size=4, validation_batch_size=None, epochs=EPOCHS, workers=0, seed=0,
                              device="cpu", aa=None, no_aug=True, mixup=0.8, cutmix=0.0, prefetcher=False,
                              smoothing=0.1, model_kwargs={}, vitdata_oracle="prune-easy")


def main(rank, world, init_file, data_root, out, ckpt, mode):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    args = timm_args(data_root)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    create_dataset, create_loader = vitdata.timm_factories(args, model, backend="torch",
                                                           augment=vitdata.AugmentConfig(patch_size=8))
    dataset_train = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True)
    loader_train = create_loader(dataset_train, batch_size=args.batch_size, is_training=True)
    loader_eval = create_loader(create_dataset(args.dataset, root=args.data_dir, split=args.val_split),
                                batch_size=args.batch_size, is_training=False)
    task = ClassificationTask(model=model, criterion=SoftTargetCrossEntropy(), device=torch.device("cpu"),
                              verbose=False)
    task.criterion = loader_train.criterion(task.criterion)                  # the README's criterion line
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    start_epoch, stop = 0, EPOCHS if mode != "first" else 2
    if mode == "resume":
        path = os.path.join(ckpt, "last.pth.tar")
        with torch.serialization.safe_globals([argparse.Namespace]):      # timm's resume_task_checkpoint loading
            ck = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch = ck["epoch"] + 1
        loader_train.resume(path, start_epoch)                               # the README's resume line
    task.prepare_distributed(device_ids=None)
    mixup_fn = Mixup(mixup_alpha=args.mixup, label_smoothing=args.smoothing, num_classes=loader_train.num_classes)
    record = {"rank": rank, "train": {}, "eval": {}, "len_dataset": len(loader_train.dataset)}
    for epoch in range(start_epoch, stop):
        set_loader_epoch(loader_train, epoch)
        train_one_epoch(epoch, task, loader_train, optimizer, mixup_fn, record)
        record["eval"][str(epoch)] = validate(model, loader_eval)
        if rank == 0:                                               # timm's CheckpointSaver: rank 0 only
            args.vitdata_loader = loader_train.state_dict()          # the README's save line
            torch.save({"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "args": args, "version": 2}, os.path.join(ckpt, "last.pth.tar"))
        record["oracle_epoch_end"] = loader_train.oracle.last_metrics["epoch"]
    record["table"] = loader_train.oracle.table_digest()            # folds nothing new: a collective anyway
    record["weights"] = [float(p.detach().double().sum()) for p in model.parameters()]
    with open(out, "w") as f:
        json.dump(record, f)
    loader_train.close()
    loader_eval.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
