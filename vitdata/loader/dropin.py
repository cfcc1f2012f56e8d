"""vitdata in a timm-family trainer's own script, from its argument namespace.

- :func:`loaders_from_args` ``(args, model=None)`` -> ``(train loader, eval loader or None)``: the config from
  ``LoaderConfig.from_timm_args``, the oracle from ``VITDATA_ORACLE`` (or the ``vitdata_oracle`` key of timm's
  ``--config`` YAML), no eval loader when the run has no validation split (timm's ``--val-split ''``). For
  a DeiT-style ``main.py``, whose loaders are built in a block of its own.
- :func:`timm_factories` ``(args, model)`` -> ``(create_dataset, create_loader)``: stand-ins for the two timm
  functions that timm's ``train.py`` calls in ``main()``. Bound to those names at the top of the data block
  (``create_dataset, create_loader = vitdata.timm_factories(args, model)``), they make every
  call below them build vitdata loaders: ``create_dataset(..., is_training=True)`` builds the train loader
  and returns its ``dataset``, ``create_loader(that dataset, ...)`` returns the loader. timm's own readers
  never open the data (WebDataset shards need no ``webdataset`` package), and timm's ``if args.val_split``
  decides, as it does for its own loaders, whether there is an eval loader.

The per-epoch calls timm makes on its loaders (``loader.dataset.set_epoch``, ``loader.sampler.set_epoch``,
``len(loader)``, ``loader.mixup_enabled``) are those of the DataLoader-shaped face
(:mod:`vitdata.loader.compat`); the loss goes through ``task.criterion = loader_train.criterion(task.criterion)``
and the state through ``args.vitdata_loader`` (:mod:`vitdata.loader.resume`).
"""
from __future__ import annotations

from vitdata.errors import ConfigError
from vitdata.loader.config import LoaderConfig
from vitdata.loader.loader import Loader, create_loader
from vitdata.loader.timm_args import vitdata_options

__all__ = ["loaders_from_args", "timm_factories", "TimmFactories"]


def loaders_from_args(args, model=None, **overrides) -> tuple[Loader, Loader | None]:
    """The train loader (with the oracle the command line asks for) and the eval loader (None when the
    arguments name no validation split) of a timm-family trainer's ``args``; ``overrides`` are
    ``LoaderConfig`` fields given in code (``backend="torch"``)."""
    cfg = LoaderConfig.from_timm_args(args, model, **overrides)
    train = create_loader(cfg, oracle=vitdata_options(args)["oracle"])
    try:
        evaluation = create_loader(cfg, split="eval") if cfg.eval.data != "" else None
    except BaseException:
        train.close()
        raise
    return train, evaluation


class TimmFactories:
    """timm's ``create_dataset`` / ``create_loader`` for ``train.py``'s ``main()``, answered by vitdata
    (see the module docstring). The config is built, and checked, when this object is: its errors name the
    user's flags at the line that binds the factories."""

    def __init__(self, args, model=None, **overrides):
        self.cfg = LoaderConfig.from_timm_args(args, model, **overrides)
        self.oracle = vitdata_options(args)["oracle"]
        self.made: list[tuple[object, Loader]] = []     # (the dataset handed to timm, its loader)

    def create_dataset(self, name=None, root=None, split=None, is_training=False, **timm_kwargs):
        """The ``dataset`` of a new vitdata loader: the train loader for ``is_training``, else the eval loader.
        ``name``, ``root`` and ``split`` are timm's ``--dataset``, ``--data-dir`` and split, which the config
        already holds; the other keywords are timm's reader options, mapped or refused by ``from_timm_args``."""
        loader = create_loader(self.cfg, "train" if is_training else "eval", self.oracle if is_training else None)
        dataset = loader.dataset
        self.made.append((dataset, loader))
        return dataset

    def create_loader(self, dataset, is_training=False, batch_size=None, collate_fn=None, **timm_kwargs):
        """The vitdata loader whose ``dataset`` timm passes back. The augmentation keywords timm passes came from
        the same ``args`` as the config; the batch size and split are checked against it."""
        loader = next((ld for ds, ld in self.made if ds is dataset), None)
        if loader is None:
            raise ConfigError("create_loader was given a dataset that vitdata's create_dataset did not make: bind "
                              "both timm functions to vitdata's (create_dataset, create_loader = "
                              "timm_factories(args, model))", ("dataset",))
        if bool(is_training) != loader.train or (batch_size is not None and int(batch_size) != loader.batch_size):
            raise ConfigError(f"timm asks for a {'train' if is_training else 'eval'} loader of batch {batch_size}; "
                              f"vitdata built a {loader.split} loader of batch {loader.batch_size} from the same "
                              f"args: were they changed in between?", ("batch_size",))
        if collate_fn is not None:
            raise ConfigError("timm passed a collate function (Mixup/CutMix in timm's collate): vitdata's loader "
                              "does not call one; run with --no-prefetcher so mixup_fn mixes in the loop",
                              ("--no-prefetcher",))
        return loader


def timm_factories(args, model=None, **overrides):
    """``(create_dataset, create_loader)`` for timm's ``train.py`` (see :class:`TimmFactories`)."""
    f = TimmFactories(args, model, **overrides)
    return f.create_dataset, f.create_loader
