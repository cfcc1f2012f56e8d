"""One rank of a loop shaped like timm's train.py (train_one_epoch / validate / rank-0 checkpoint / resume
with a start epoch), fed by vitdata with an oracle, on gloo. Writes this rank's record as JSON.

argv: rank world init_file data out_json ckpt_dir mode, mode = full (epochs 0..2) | first (epochs 0..1,
then stop as a crash would) | resume (load rank 0's checkpoint, start at epoch 2).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import vitdata

EPOCHS = 3


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, mixup_fn, record):
    np.random.seed(1000 + 10 * epoch + dist.get_rank())     # timm's Mixup draws from NumPy's global RNG
    model.train()
    last_idx = len(loader) - 1
    ids = []
    for batch_idx, (input, target) in enumerate(loader):      # timm unpacks the batch
        input, target = mixup_fn(input, target)
        output = model(input)
        loss = loader.loss(output, target, criterion=loss_fn)  # the one changed line of train_one_epoch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ids += loader.last_batch.ids.tolist()
        assert batch_idx <= last_idx
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


def main(rank, world, init_file, data, out, ckpt, mode):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = vitdata.LoaderConfig(data=data, batch_size=4, image_size=32, backend="torch", num_workers=0,
                               augment=vitdata.AugmentConfig(randaug=False, patch_size=8),
                               eval=vitdata.EvalConfig(data=data), schedule=vitdata.ScheduleConfig(epochs=EPOCHS))
    loader_train = vitdata.create_loader(cfg, oracle="prune-easy")
    loader_eval = vitdata.create_loader(cfg, split="eval")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, loader_train.num_classes))
    model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    mixup_fn = Mixup(mixup_alpha=0.8, label_smoothing=0.1, num_classes=loader_train.num_classes)
    start_epoch, stop = 0, EPOCHS
    if mode == "first":
        stop = 2
    if mode == "resume":
        ck = torch.load(os.path.join(ckpt, "last.pth"))             # timm's resume_checkpoint, every rank
        model.module.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch = ck["epoch"] + 1
        loader_train.load(os.path.join(ckpt, "vitdata-loader.json"))
    record = {"rank": rank, "train": {}, "eval": {}, "len_dataset": len(loader_train.dataset)}
    for epoch in range(start_epoch, stop):
        loader_train.sampler.set_epoch(epoch)                       # timm's distributed branch
        train_one_epoch(epoch, model, loader_train, optimizer, SoftTargetCrossEntropy(), mixup_fn, record)
        record["eval"][str(epoch)] = validate(model, loader_eval)
        if rank == 0:                                               # timm's CheckpointSaver: rank 0 only
            torch.save({"epoch": epoch, "state_dict": model.module.state_dict(),
                        "optimizer": optimizer.state_dict()}, os.path.join(ckpt, "last.pth"))
            loader_train.save(os.path.join(ckpt, "vitdata-loader.json"))
        record["oracle_epoch_end"] = loader_train.oracle.last_metrics["epoch"]
    record["table"] = loader_train.oracle.table_digest()            # folds nothing new: a collective anyway
    record["weights"] = [float(p.double().sum()) for p in model.parameters()]
    with open(out, "w") as f:
        json.dump(record, f)
    loader_train.close()
    loader_eval.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
