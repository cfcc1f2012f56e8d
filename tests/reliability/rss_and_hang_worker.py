"""Child processes for test_resident_memory.py (F2) and test_ddp_ranks.py (G5 with a hanging rank). Run as a script:

    rss_and_hang_worker.py f2 DATA STEPS MAX_PIXELS OUT
    rss_and_hang_worker.py g5hang RANK WORLD PORT DATA FIFO OUT

``f2``: a DALI training loader (skip) over DATA for STEPS steps in a fresh process; writes JSON with the
resident memory (MB) of this process and of its source workers after every step, and the skip report.

``g5hang``: one rank of a 2-rank gloo job set up by ``vitdata.train.setup_distributed`` with
``dist_timeout=10``; each step is followed by an all-reduce (a gradient all-reduce stand-in). On rank 1
the read of the 4th step's first sample stalls for good (a blocking open of FIFO, which nobody writes:
what a hung network filesystem looks like to the reader), so rank 1 never reaches that step's
collective. Each rank appends "step S T", "stall T" or "error T: message" lines to OUT.
"""
import json
import os
import sys
import time
import traceback

FULL_VIEW = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)


def run_f2(data: str, steps: int, max_pixels: int, out: str) -> None:
    import psutil

    from vitdata import LoaderConfig, create_loader
    from vitdata.loader.config import AugmentConfig

    ld = create_loader(LoaderConfig(data=data, batch_size=8, image_size=32, backend="dali", num_workers=1,
                                    max_pixels=max_pixels, on_error="skip", augment=AugmentConfig(**FULL_VIEW)))
    proc = psutil.Process()
    main, workers, skipped = [], [], []
    done, epoch = 0, 0
    t = time.perf_counter()
    while done < steps:
        ld.set_epoch(epoch)
        for _ in ld:
            done += 1
            main.append(proc.memory_info().rss / 2**20)
            workers.append(sum(c.memory_info().rss for c in proc.children(recursive=True)) / 2**20)
            if done == steps:
                break
        skipped += [(d["path"], d["reason"]) for d in ld.skipped(epoch)]
        epoch += 1
    ld.close()
    with open(out, "w") as f:
        json.dump({"main": main, "workers": workers, "skipped": skipped, "seconds": time.perf_counter() - t}, f)


def run_g5hang(rank: int, world: int, port: int, data: str, fifo: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    from vitdata import LoaderConfig, create_loader
    from vitdata.data.reader import SampleReader
    from vitdata.loader.config import AugmentConfig
    from vitdata.train.config import TrainConfig
    from vitdata.train.loop import setup_distributed

    log = open(out, "a", buffering=1)
    setup_distributed(TrainConfig(device="cpu", dist_timeout=10.0))
    ld = create_loader(LoaderConfig(data=data, batch_size=4, image_size=16, backend="torch", num_workers=0,
                                    augment=AugmentConfig(**FULL_VIEW)))
    if rank == 1:
        read, stall_at = SampleReader.read, set(ld.sampler.epoch_ids(0)[3, :1].tolist())

        def stalling(self, i):
            if i in stall_at:
                log.write(f"stall {time.time():.3f}\n")
                with open(fifo, "rb") as f:      # blocks until a writer opens the FIFO: never
                    f.read()
            return read(self, i)

        SampleReader.read = stalling
    try:
        for step, _ in enumerate(ld):
            t = torch.ones(1)
            dist.all_reduce(t)
            log.write(f"step {step} {time.time():.3f}\n")
    except Exception as e:
        log.write(f"error {time.time():.3f}: {type(e).__name__}: {str(e).splitlines()[0][:300]}\n")
        traceback.print_exc()
        sys.exit(1)
    log.write(f"done {time.time():.3f}\n")


def main():
    mode = sys.argv[1]
    if mode == "f2":
        data, steps, max_pixels, out = sys.argv[2:6]
        run_f2(data, int(steps), int(max_pixels), out)
    elif mode == "g5hang":
        rank, world, port, data, fifo, out = sys.argv[2:8]
        run_g5hang(int(rank), int(world), int(port), data, fifo, out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
