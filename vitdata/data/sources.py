"""Which data a run reads: the command-line data options resolved to a training and a validation source.

``--data ROOT`` means ``ROOT/train`` and ``ROOT/val``; ``--train`` / ``--val`` name a split directly and win
over ``--data``. With neither, the built-in synthetic dataset (:mod:`vitdata.data.synthetic`), generated
once into the vitdata cache.
"""
from __future__ import annotations

import os
from typing import Optional

from vitdata.errors import ConfigError


def resolve_sources(data: Optional[str] = None, train: Optional[str] = None, val: Optional[str] = None, *,
                    synthetic_samples: int = 10000, rank: int = 0,
                    require_val: bool = True) -> tuple[str, Optional[str]]:
    """(train source, val source). ``require_val=False`` (a caller that reads only the training split)
    returns None for a validation split that was not given.

    Without ``data`` or ``train``: the synthetic dataset of ``synthetic_samples`` images in the vitdata
    cache, written by rank 0 while the other ranks of an initialised process group wait at a barrier.
    """
    if data and not train and not os.path.isdir(os.path.join(data, "train")):
        what = "does not exist" if not os.path.exists(data) else "holds no train/ directory"
        raise ConfigError(f"--data {data} {what}: --data ROOT reads ROOT/train and ROOT/val; give --train DIR (and "
                          f"--val DIR) to name the splits directly", ("data",))
    if train or data:
        train_src = train or os.path.join(data, "train")
        val_src = val or (os.path.join(data, "val") if data else None)
        if val_src is None and require_val:
            raise ConfigError("--train needs --val (or give --data ROOT with ROOT/train and ROOT/val)", ("val",))
        return train_src, val_src
    import torch.distributed as dist

    from vitdata.data import synthetic
    root = synthetic.default_root(n=synthetic_samples)
    if rank == 0:
        synthetic.generate(root, num_samples=synthetic_samples)
    if dist.is_initialized():
        dist.barrier()
    return os.path.join(root, "train"), os.path.join(root, "val")
