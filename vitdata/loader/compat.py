"""What a PyTorch trainer written for ``torch.utils.data.DataLoader`` reads from its loader, on vitdata's
:class:`~vitdata.loader.Loader`, and the one-call loss that feeds the oracle.

- ``len(loader)``: steps of the epoch on this rank (PyTorch: batches per epoch).
- ``loader.batch_size``: per-rank batch size.
- ``loader.dataset``: a view of the index with ``len()`` (samples in the split), ``num_classes``,
  ``classes`` and ``set_epoch(e)`` (timm's ``train.py`` calls ``dataset_train.set_epoch`` when it exists).
- ``loader.sampler``: vitdata's :class:`~vitdata.data.sampler.Sampler` seen as PyTorch's: ``len()`` is the ids
  this rank reads per epoch (``DistributedSampler``), and ``loader.sampler.set_epoch(e)`` is
  ``loader.set_epoch(e)``: the plan, order and augmentation of epoch ``e`` (not silently ignored).
- ``loader.batch_sampler``: ``len()`` steps; iterating gives this rank's remaining id lists.
- ``loader.num_samples`` / ``loader.num_classes``: from the index, known before the first batch.
- ``loader.loss(logits, batch, target=None, criterion=None, own_labels=None)``: per-sample losses -> oracle
  report -> ``batch.loss_weight`` applied -> the mean, in one call (see :func:`per_sample_loss`).
- ``loader.criterion(fn)``: ``fn`` with the loader in its path, for trainers whose loss is computed where the
  user does not edit it (timm's ``task.criterion``, DeiT's ``DistillationLoss``): see
  :class:`~vitdata.loader.loss.LoaderCriterion`.
- ``loader.planned_steps(epochs)``: steps of every epoch, for an LR schedule sized at start-up.
- ``loader.save(path)`` / ``loader.load(path)``: the state as a JSON file, rank-local;
  ``loader.resume(checkpoint, epoch)``: the state a trainer saved inside its own checkpoint
  (:mod:`vitdata.loader.resume`).
- ``loader.mixup_enabled``: False (timm's ``train.py`` asks its prefetching loader; vitdata's never mixes).
"""
from __future__ import annotations

import torch

from vitdata.errors import ConfigError
from vitdata.loader.loss import LoaderCriterion, per_sample_loss, weighted_loss

__all__ = ["TrainerAPI", "LoaderDataset", "LoaderSampler", "BatchSampler", "per_sample_loss", "weighted_loss"]


class LoaderDataset:
    """``loader.dataset``: the split's samples as PyTorch code sees a dataset (length, classes, set_epoch).
    Items are not indexable: the loader reads and augments them in its own pipeline."""

    def __init__(self, loader):
        self._loader = loader

    @property
    def index(self):
        return self._loader.index

    @property
    def classes(self) -> list[str]:
        return list(self._loader.index.classes)

    @property
    def num_classes(self) -> int:
        return self._loader.index.num_classes

    def __len__(self) -> int:
        return len(self._loader.index)

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    def __getitem__(self, i):
        raise TypeError("vitdata's loader.dataset has no items: the loader reads, decodes and augments samples in "
                        "its own pipeline; iterate the loader instead")

    def __repr__(self) -> str:
        return f"LoaderDataset({len(self)} samples, {self.num_classes} classes, {self._loader.index.spec!r})"


class BatchSampler:
    """``loader.batch_sampler``: ``len()`` steps of the epoch; iterating gives this rank's remaining id lists."""

    def __init__(self, loader):
        self._loader = loader

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        len(self._loader)                 # the epoch's plan is on the sampler before its order is read
        return (row.tolist() for row in self._loader._sampler.remaining_ids(self._loader.epoch,
                                                                              self._loader.position))


class LoaderSampler:
    """``loader.sampler``: the loader's :class:`~vitdata.data.sampler.Sampler` (every attribute forwarded) with
    PyTorch's sampler meaning on top: ``len()`` the ids this rank reads per epoch (padding excluded, as
    ``DistributedSampler``), iteration over them (the remaining ones, as ints), ``set_epoch(e)`` that is
    ``loader.set_epoch(e)``, and ``epoch`` / ``position`` that are the loader's. For trainers only: the
    loader's own code talks to its Sampler directly."""

    __slots__ = ("_loader", "_inner")

    def __init__(self, loader, inner):
        object.__setattr__(self, "_loader", loader)
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        if name in LoaderSampler.__slots__:      # not set yet (copy, unpickling): no recursion through _inner
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    @property
    def position(self) -> int:
        return self._loader.position

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    def __len__(self) -> int:
        len(self._loader)                 # the epoch's plan first: it sets how many ids there are
        return int((self._inner.epoch_ids(self._loader.epoch) >= 0).sum())

    def __iter__(self):
        len(self._loader)
        ids = self._inner.remaining_ids(self._loader.epoch, self._loader.position).reshape(-1)
        return iter(ids[ids >= 0].tolist())

    def __repr__(self) -> str:
        return f"LoaderSampler({self._inner!r})"


class TrainerAPI:
    """Mixed into :class:`~vitdata.loader.Loader`: the DataLoader-shaped attributes and the loss helper."""

    # The wrappers are made on access and never stored on the loader: a stored one would point back at it,
    # and that cycle would keep the loader (and its worker processes) alive after ``del loader``. They
    # face outward only (as timm's PrefetchLoader forwards ``sampler`` and ``dataset``): the loader's own
    # code uses ``self._sampler``.
    @property
    def sampler(self) -> "LoaderSampler":
        return LoaderSampler(self, self._sampler)

    @property
    def dataset(self) -> LoaderDataset:
        return LoaderDataset(self)

    @property
    def batch_sampler(self) -> BatchSampler:
        return BatchSampler(self)

    @property
    def num_samples(self) -> int:
        """Samples in this split's index (the oracle's ``num_samples``)."""
        return len(self.index)

    @property
    def num_classes(self) -> int:
        """Classes in this split's index (the model's ``num_classes``)."""
        return self.index.num_classes

    def loss(self, logits: torch.Tensor, batch=None, target: torch.Tensor | None = None,
             criterion=None, own_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The step's loss in one call: per-sample losses (:func:`per_sample_loss`; ``target`` defaults to
        ``batch.labels``, pass timm Mixup's soft targets when mixing) are reported to the oracle with the
        logits (so ``p_y`` is exact, also for soft targets), weighted by ``batch.loss_weight`` and averaged.
        No host sync. Returns the scalar to call ``backward`` on.

        ``own_labels`` (B,): with soft targets, each sample's label before mixing (``batch.labels`` under
        Mixup/CutMix); the oracle's ``p_y`` is then the own label's probability over its share of the
        target (:meth:`vitdata.oracle.difficulty.DifficultyOracle.report`). Without it the label with the
        most mass stands in.

        ``batch`` defaults to the batch this loader handed over last, and a tensor in its place is the
        target, so timm's ``loss_fn(output, target)`` becomes ``loader.loss(output, target, criterion=loss_fn)``
        in a loop that unpacked ``input, target = batch``."""
        if isinstance(batch, torch.Tensor):
            if target is not None:
                raise TypeError("loss(logits, target, target=...): the target is given twice")
            batch, target = None, batch
        if batch is None:
            batch = getattr(self, "last_batch", None)
            if batch is None:
                raise RuntimeError("loader.loss: no batch given and this loader has not handed one over yet")
        target = batch.labels if target is None else target
        losses = per_sample_loss(logits, target, criterion)
        if getattr(self, "oracle", None) is not None and self.train:
            self.report(batch.ids, losses.detach(), logits=logits.detach(), labels=target.detach(),
                        own_labels=own_labels)
        return weighted_loss(losses, batch)

    def criterion(self, criterion=None) -> LoaderCriterion:
        """``criterion`` (a ``(output, target) -> loss`` callable; None: cross-entropy) with this loader in its
        path: per-sample losses of the last batch to the oracle, loss weights applied (see
        :class:`~vitdata.loader.loss.LoaderCriterion`). ``task.criterion = loader.criterion(task.criterion)``."""
        return LoaderCriterion(self, criterion)

    @property
    def mixup_enabled(self) -> bool:
        """False: this loader never mixes (timm's ``train.py`` reads it from a loader that mixes in its collate)."""
        return False

    def resume(self, checkpoint, epoch: int | None) -> bool:
        """Resume at ``epoch`` from the state saved inside a trainer's ``checkpoint`` (path or loaded dict) as
        ``args.vitdata_loader``; see :func:`vitdata.loader.resume.resume_from_checkpoint`."""
        from vitdata.loader.resume import resume_from_checkpoint

        return resume_from_checkpoint(self, checkpoint, epoch)

    def save(self, path) -> None:
        """Write :meth:`state_dict` as JSON to ``path`` atomically (temp file, fsync, rename). Rank-local: call it
        on the rank that saves checkpoints (rank 0 only is enough); every rank can :meth:`load` the file."""
        import json

        from vitdata.io import atomic_write

        atomic_write(path, json.dumps(self.state_dict()).encode())

    def load(self, path) -> None:
        """:meth:`load_state_dict` from a file written by :meth:`save` (StateError when it is not one)."""
        import json

        from vitdata.errors import StateError

        try:
            with open(path, "rb") as f:
                state = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise StateError(f"cannot read loader state {path}: {e}") from e
        self.load_state_dict(state)

    def planned_steps(self, epochs: int | None = None) -> list[int]:
        """Steps on this rank of epochs ``0 .. epochs - 1`` (default: the schedule's ``epochs``), known at
        start-up. Exact without an oracle and with the "uniform", "data-centric" and "weighted" policies
        (their epochs have a fixed number of draws); with "prune-easy" (kept set drawn each epoch) it is the
        full-data count, an upper bound: such epochs are shorter, and ``len(loader)`` after ``set_epoch``
        is exact. An LR schedule stepped per epoch (timm's default, ``t_in_epochs=True``) is unaffected;
        one stepped per update can be sized with ``sum(loader.planned_steps())``."""
        epochs = self.cfg.schedule.epochs if epochs is None else int(epochs)
        if epochs is None or epochs < 1:
            raise ConfigError("planned_steps needs epochs (argument, or schedule.epochs)", ("schedule.epochs",))
        g = self._sampler.global_batch_size
        draws = self.num_samples
        policy = getattr(getattr(self, "oracle", None), "policy", None)
        if getattr(policy, "num_draws", None):
            draws = int(policy.num_draws)
        steps = draws // g if self.train else -(-draws // g)
        return [steps] * epochs


