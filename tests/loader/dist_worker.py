"""One rank of the 2-process gloo test: writes this rank's ids of 2 train epochs and 1 eval epoch as JSON."""
import json
import sys

import torch.distributed as dist

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig


def main(rank: int, world: int, init_file: str, data: str, out: str, backend: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = LoaderConfig(data=data, batch_size=4, image_size=32, backend=backend, num_workers=1, num_threads=1,
                       augment=AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False))
    result = {"rank": dist.get_rank(), "train": [], "eval": []}
    train = create_loader(cfg)
    result["len"] = len(train)
    for epoch in range(2):
        train.set_epoch(epoch)
        result["train"].append([i for b in train for i in b.ids.tolist()])
    train.close()
    ev = create_loader(cfg, split="eval")
    result["eval"] = [i for b in ev for i in b.ids.tolist()]
    ev.close()
    with open(out, "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
