"""One rank of the 2-process gloo quarantine test: 2 train epochs with decoder-failing files; writes this
rank's steps, ids, skipped ids and quarantine per epoch as JSON."""
import json
import sys

import torch.distributed as dist

from vitdata import LoaderConfig, create_loader
from vitdata.loader.config import AugmentConfig


def main(rank: int, world: int, init_file: str, data: str, out: str, backend: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = LoaderConfig(data=data, batch_size=4, image_size=32, backend=backend, num_workers=0, num_threads=1,
                       seed=3, on_error="skip", check_png_data=False,   # decodefail.py
                       augment=AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False))
    res = {"rank": dist.get_rank(), "steps": [], "ids": [], "skipped": []}
    ld = create_loader(cfg)
    for epoch in range(2):
        ld.set_epoch(epoch)
        batches = [b.ids.tolist() for b in ld]
        res["steps"].append(len(batches))
        res["ids"].append([i for b in batches for i in b])
        res["skipped"].append([r["id"] for r in ld.skipped(epoch)])
    res["quarantine"] = [e["id"] for e in ld.quarantine.state()]
    ld.close()
    with open(out, "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
