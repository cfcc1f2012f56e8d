"""``LoaderConfig.from_timm_args(args, model)``: timm ``train.py``'s argument namespace -> a LoaderConfig.

Carried over (timm option -> vitdata field):

==============================================  ============================================================
``data_dir`` (or the positional ``data``)       ``data`` = ``data_dir/train_split``, ``eval.data`` =
 + ``train_split`` / ``val_split``               ``data_dir/val_split`` (``validation`` falls back to ``val``,
                                                 as timm's folder reader does); a root without the split dir
                                                 is used as it is
``input_size`` / ``img_size``                   ``image_size`` (else the model's)
``mean`` / ``std`` / ``interpolation``          ``output.mean`` / ``output.std`` / ``augment.interpolation``
                                                 (else the model's)
``crop_pct``                                    ``eval.crop_pct``
``aa`` ``rand-mM-nN...``                        ``augment.randaug`` on, ``randaug_magnitude`` M, ``num_ops`` N
``scale`` / ``ratio`` / ``hflip``               ``augment.scale`` / ``ratio`` / ``hflip``
``no_aug``                                      scale (1, 1), ratio (1, 1), no flip, no RandAugment
``batch_size`` / ``validation_batch_size``      ``batch_size`` / ``eval.batch_size``
``workers`` / ``seed`` / ``channels_last``      ``num_workers`` / ``seed`` / ``output.channels_last``
``epochs``                                      ``schedule.epochs``
``device``                                      ``output.device``
==============================================  ============================================================

Not run by vitdata, and what they become (a ``UserWarning`` lists those set away from "off"):
``reprob`` / ``remode`` / ``recount`` (timm's RandomErasing: no erasing; vitdata's erasing is PatchErasing,
``ScheduleConfig(kwargs=dict(erase_ratio=...))``), ``vflip`` (no vertical flip), ``color_jitter`` without
``aa`` (no colour jitter; timm turns it off under RandAugment anyway), ``aa``'s ``mstd`` / ``inc`` (a fixed
magnitude), ``train_interpolation`` (the eval ``interpolation`` is used), ``aug_repeats`` (each id once per
epoch), ``grayscale_prob`` / ``gaussian_blur_prob`` (not applied), ``train_crop_mode`` (random-resized crop).
Refused (ConfigError): a non-folder ``dataset`` (``torch/``, ``hfds/``, ``tfds/``, ``wds/``: pass the shards
as ``data=`` instead), ``aug_splits`` / ``jsd_loss`` (several views of one sample), an ``aa`` other than
RandAugment, and Mixup/CutMix with timm's prefetcher on (timm then mixes inside its own collate function,
which vitdata's loader does not call: run with ``--no-prefetcher``, so ``mixup_fn`` mixes in the loop).
``mixup`` / ``cutmix`` / ``smoothing`` stay with the trainer (timm's ``mixup_fn`` and loss; pass the loss to
``loader.loss(output, target, criterion=loss_fn)``). ``amp`` stays with the trainer's autocast: the loader
yields float32, as timm's loader does.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings

from vitdata.errors import ConfigError

__all__ = ["config_from_timm_args", "parse_aa"]


def _get(args, name, default=None):
    v = getattr(args, name, default)
    return default if v is None else v


def parse_aa(aa: str) -> tuple[float, int, list[str]]:
    """timm's ``rand-m9-n2-mstd0.5-inc1`` -> (magnitude, num_ops, [parts vitdata does not run])."""
    parts = aa.split("-")
    if parts[0] != "rand":
        raise ConfigError(f"--aa {aa!r}: vitdata runs RandAugment only ('rand-m9-mstd0.5-inc1' style); AutoAugment and "
                          f"AugMix policies are not available", ("aa",))
    magnitude, num_ops, ignored = 9.0, 2, []
    for p in parts[1:]:
        m = re.fullmatch(r"([a-z]+)([\d.]+)", p)
        if m is None:
            raise ConfigError(f"--aa {aa!r}: cannot read {p!r}", ("aa",))
        key, val = m.group(1), m.group(2)
        if key == "m":
            magnitude = float(val)
        elif key == "n":
            num_ops = int(float(val))
        elif key in ("mstd", "mmax", "inc", "w", "p"):
            if not (key == "mstd" and float(val) == 0):
                ignored.append(p)
        else:
            raise ConfigError(f"--aa {aa!r}: unknown part {p!r}", ("aa",))
    return magnitude, num_ops, ignored


def _split_dir(root: str, split: str) -> str:
    for name in (split, "val" if split == "validation" else None):
        if name and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return root


def config_from_timm_args(cls, args, model=None, **overrides):
    """``cls.from_timm_args``: ``cls`` is :class:`~vitdata.loader.config.LoaderConfig`, which checks the sizes
    against ``model`` afterwards."""
    dataset = str(_get(args, "dataset", "") or "")
    if dataset and dataset.split("/")[0].lower() not in ("folder", "imagefolder", "image_folder"):
        raise ConfigError(f"--dataset {dataset!r}: vitdata reads ImageFolder trees and WebDataset .tar shards from disk; "
                          f"pass the directory or the shards as data=", ("dataset",))
    if _get(args, "aug_splits", 0) or _get(args, "jsd_loss", False):
        raise ConfigError("--aug-splits / --jsd-loss need several augmented views of one sample, which vitdata's "
                          "loader does not make", ("aug_splits", "jsd_loss"))
    mixing = _get(args, "mixup", 0) > 0 or _get(args, "cutmix", 0) > 0 or _get(args, "cutmix_minmax") is not None
    if mixing and _get(args, "prefetcher", False):
        raise ConfigError("Mixup/CutMix with timm's prefetcher on: timm then mixes in its collate function, which "
                          "vitdata's loader does not call; run train.py with --no-prefetcher (mixup_fn then mixes in "
                          "the loop; vitdata's batches are already normalised tensors on the device)", ("prefetcher",))
    root = _get(args, "data_dir") or _get(args, "data")
    if not root:
        raise ConfigError("timm args give no data directory (data_dir / data)", ("data_dir",))
    root = os.fspath(root)
    train_split, val_split = _get(args, "train_split", "train"), _get(args, "val_split", "validation")

    unsupported = []
    cfg = cls.from_timm_model(model) if model is not None else cls()
    a, o, e = cfg.augment, cfg.output, cfg.eval
    size = _get(args, "input_size")
    size = size[-1] if size else _get(args, "img_size")
    image_size = int(size) if size else cfg.image_size
    aa = _get(args, "aa")
    no_aug = _get(args, "no_aug", False)
    randaug, magnitude, num_ops = False, a.randaug_magnitude, a.randaug_num_ops
    if aa and not no_aug:
        magnitude, num_ops, ignored = parse_aa(str(aa))
        randaug = True
        if ignored:
            unsupported.append(f"aa parts {'-'.join(ignored)} (a fixed magnitude {magnitude:g})")
    interp = _get(args, "interpolation") or a.interpolation
    a = dataclasses.replace(a, scale=tuple(_get(args, "scale", a.scale)), ratio=tuple(_get(args, "ratio", a.ratio)),
                            hflip=float(_get(args, "hflip", a.hflip)), randaug=randaug, randaug_magnitude=magnitude,
                            randaug_num_ops=num_ops, interpolation=interp or None)
    if no_aug:
        a = dataclasses.replace(a, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)
    mean, std = _get(args, "mean"), _get(args, "std")
    o = dataclasses.replace(o, mean=tuple(mean) if mean else o.mean, std=tuple(std) if std else o.std,
                            channels_last=bool(_get(args, "channels_last", False)),
                            device=str(_get(args, "device", "auto")))
    e = dataclasses.replace(e, data=_split_dir(root, val_split) if val_split else None,
                            crop_pct=_get(args, "crop_pct", e.crop_pct),
                            batch_size=_get(args, "validation_batch_size"))
    epochs = _get(args, "epochs")
    sched = type(cfg.schedule)(epochs=int(epochs) if epochs else None)

    if _get(args, "reprob", 0) > 0:
        unsupported.append(f"reprob {args.reprob} (timm's RandomErasing: no erasing; PatchErasing is "
                           f"ScheduleConfig(kwargs=dict(erase_ratio=...)))")
    if _get(args, "vflip", 0) > 0:
        unsupported.append(f"vflip {args.vflip} (no vertical flip)")
    if not aa and not no_aug and _get(args, "color_jitter", 0) > 0:
        unsupported.append(f"color_jitter {args.color_jitter} (no colour jitter)")
    if _get(args, "train_interpolation", "") not in ("", None, interp):
        unsupported.append(f"train_interpolation {args.train_interpolation!r} (the resize uses "
                           f"{interp or 'the model default'})")
    if _get(args, "aug_repeats", 0) > 0:
        unsupported.append(f"aug_repeats {args.aug_repeats} (each sample once per epoch)")
    for name in ("grayscale_prob", "gaussian_blur_prob", "color_jitter_prob"):
        if _get(args, name, 0):
            unsupported.append(f"{name} {getattr(args, name)} (not applied)")
    if _get(args, "train_crop_mode") not in (None, "", "rrc"):
        unsupported.append(f"train_crop_mode {args.train_crop_mode!r} (random-resized crop)")
    if unsupported:
        warnings.warn("timm options vitdata does not run: " + "; ".join(unsupported), UserWarning, stacklevel=3)

    fields = dict(data=_split_dir(root, train_split), image_size=image_size, augment=a, output=o, eval=e,
                  schedule=sched, batch_size=int(_get(args, "batch_size", cfg.batch_size)), seed=int(_get(args, "seed", 0)))
    if _get(args, "workers") is not None:
        fields["num_workers"] = int(args.workers)
    return dataclasses.replace(cfg, **fields).with_overrides(**overrides)   # a nested section given is merged
