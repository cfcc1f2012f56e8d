"""``LoaderConfig.from_timm_args(args, model)``: the argument namespace of a timm-family trainer -> a LoaderConfig.

Reads timm's ``train.py`` options and those of DeiT-style ``main.py`` trainers, which fork them (``--data-path``,
an int ``--input-size``, ``--eval-crop-ratio``, ``--num_workers``, ``--repeated-aug``, ``--ThreeAugment``).

Carried over (option -> vitdata field):

==============================================  ============================================================
``--data-dir`` (or the positional ``DATA``;     ``data`` = ``data_dir/train_split``, ``eval.data`` =
 DeiT's ``--data-path``) + ``--train-split`` /   ``data_dir/val_split`` (``validation`` falls back to ``val``,
 ``--val-split``                                 as timm's folder reader does); a root without the split dir
                                                 is used as it is; ``--val-split ''`` (timm: no validation):
                                                 ``eval.data = ""``, an eval loader is refused
``--dataset wds/NAME`` + the splits             WebDataset shards: a split in brace form
                                                 (``train-{0000..0099}.tar``, ``|N`` dropped) or a split named
                                                 in ``data_dir/_info.json`` (its shard list as a brace range)
``--target-key``                                ``label_member`` (the shard member holding the label)
``--input-size`` / ``--img-size``               ``image_size`` (else the model's)
``--mean`` / ``--std`` / ``--interpolation``    ``output.mean`` / ``output.std`` / ``augment.interpolation``
                                                 (else the model's; DeiT: ``--train-interpolation``)
``--crop-pct`` (DeiT ``--eval-crop-ratio``)     ``eval.crop_pct``
``--aa rand-mM-nN...``                          ``augment.randaug`` on, magnitude M, N ops (under a
                                                 curriculum: on, the curriculum's magnitudes)
``--scale`` / ``--ratio`` / ``--hflip``         ``augment.scale`` / ``ratio`` / ``hflip``
``--no-aug``                                    scale (1, 1), ratio (1, 1), no flip, no RandAugment
``--batch-size`` / ``--validation-batch-size``  ``batch_size`` / ``eval.batch_size``
``--workers`` / ``--seed`` / ``--channels-last``  ``num_workers`` / ``seed`` / ``output.channels_last``
``--model-dtype`` (or the model's bf16/fp16)    ``output.dtype``: batches in the model's dtype
``--epochs``                                    ``schedule.epochs``
``--device``                                    ``output.device``
==============================================  ============================================================

The curriculum and the oracle come without new flags in the trainer (:func:`vitdata_options`): the
environment variables ``VITDATA_CURRICULUM`` (a schedule name), ``VITDATA_CURRICULUM_KWARGS`` (JSON object of
its keywords) and ``VITDATA_ORACLE`` (a policy name), or the keys ``vitdata_curriculum``,
``vitdata_curriculum_kwargs`` and ``vitdata_oracle`` of the YAML file given to timm's ``--config`` (timm sets
every key of that file on ``args``, flag or not). The config's ``flags`` record which option set each field,
so errors (configuration, and a loader state that does not fit) name ``--epochs``, ``--img-size``,
``VITDATA_CURRICULUM``... instead of vitdata's field names.

Not run by vitdata, and what they become (one ``UserWarning`` lists those set away from "off"):
``--reprob`` (timm's RandomErasing: no erasing; vitdata's is PatchErasing, a curriculum keyword
``erase_ratio``), ``--vflip``, ``--color-jitter`` without ``--aa``, ``--aa``'s ``mstd`` / ``inc`` (a fixed
magnitude), ``--train-interpolation`` (the eval filter is used), ``--aug-repeats`` / DeiT's ``--repeated-aug``
(each id once per epoch), ``--grayscale-prob`` / ``--gaussian-blur-prob``, ``--train-crop-mode``,
``--epoch-repeats``, ``--train-num-samples`` / ``--val-num-samples`` / ``--train-batches-per-epoch`` (the
epoch is the index's length), DeiT's ``--ThreeAugment`` and ``--src``.
Refused (ConfigError naming the option): a ``--dataset`` other than a folder or ``wds/`` (``torch/``,
``hfds/``, ``tfds/``; DeiT's ``--data-set`` other than IMNET), ``--class-map`` (vitdata numbers the sorted
class folders), ``--in-chans`` / ``--input-img-mode`` other than RGB, ``--naflex-loader``,
``--train-img-sizes`` (timm's own size schedule: use ``VITDATA_CURRICULUM=progressive-size``),
``--aug-splits`` / ``--jsd-loss``, an ``--aa`` other than RandAugment, ``--bce-loss`` with an oracle (no
per-sample loss), and Mixup/CutMix with timm's prefetcher on (timm then mixes inside its collate function,
which vitdata's loader does not call: run with ``--no-prefetcher``, so ``mixup_fn`` mixes in the loop).
``--mixup`` / ``--cutmix`` / ``--smoothing`` stay with the trainer; ``--amp`` stays with its autocast (the
loader then yields float32, as timm's loader does).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings

from vitdata.errors import ConfigError, user_stacklevel

__all__ = ["config_from_timm_args", "parse_aa", "vitdata_options"]

FOLDER_DATASETS = ("", "folder", "imagefolder", "image_folder")
# field -> [(args attribute, the flag that sets it)]: the first one the user set names the field, else the
# last one the namespace has (a size taken from the model is changed with --model-kwargs img_size=N)
FLAG_SOURCES = {
    "data": [("data_dir", "--data-dir"), ("data_path", "--data-path"), ("data", "DATA")],
    "eval.data": [("val_split", "--val-split"), ("data_path", "--data-path")],
    "image_size": [("input_size", "--input-size"), ("img_size", "--img-size"),
                   ("model_kwargs", "--model-kwargs img_size={}")],
    "augment.scale": [("scale", "--scale")], "augment.ratio": [("ratio", "--ratio")],
    "augment.hflip": [("hflip", "--hflip")],
    "augment.randaug_magnitude": [("aa", "--aa")], "augment.randaug_num_ops": [("aa", "--aa")],
    "augment.interpolation": [("interpolation", "--interpolation"), ("train_interpolation", "--train-interpolation")],
    "output.mean": [("mean", "--mean")], "output.std": [("std", "--std")],
    "output.dtype": [("model_dtype", "--model-dtype")], "output.channels_last": [("channels_last", "--channels-last")],
    "output.device": [("device", "--device")],
    "eval.crop_pct": [("crop_pct", "--crop-pct"), ("eval_crop_ratio", "--eval-crop-ratio")],
    "eval.batch_size": [("validation_batch_size", "--validation-batch-size")],
    "batch_size": [("batch_size", "--batch-size")], "seed": [("seed", "--seed")],
    "num_workers": [("workers", "--workers"), ("num_workers", "--num_workers")],
    "schedule.epochs": [("epochs", "--epochs")], "label_member": [("target_key", "--target-key")],
    "augment.patch_size": [("model_kwargs", "--model-kwargs patch_size={}"), ("model", "--model")],
    "patch_size": [("model_kwargs", "--model-kwargs patch_size={}"), ("model", "--model")],
    "model.dynamic_img_size": [("model_kwargs", "--model-kwargs dynamic_img_size=True"), ("model", "--model")],
}
MODEL_FIELDS = ("augment.patch_size", "patch_size", "model.dynamic_img_size")
OPTIONS = {"curriculum": "VITDATA_CURRICULUM", "curriculum_kwargs": "VITDATA_CURRICULUM_KWARGS",
           "oracle": "VITDATA_ORACLE"}


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


def vitdata_options(args) -> dict:
    """The vitdata choices a timm-family command line carries without flags of its own: ``curriculum`` (schedule
    name or None), ``curriculum_kwargs`` (dict), ``oracle`` (policy name or None), and ``sources`` (each one's
    origin, for error messages). From ``args.vitdata_<name>`` (a key of timm's ``--config`` YAML) or the
    environment variable ``VITDATA_<NAME>``; both set and different is refused."""
    out, sources = {}, {}
    for key, env in OPTIONS.items():
        from_args, from_env = getattr(args, f"vitdata_{key}", None), os.environ.get(env) or None
        if key == "curriculum_kwargs" and isinstance(from_env, str):
            try:
                from_env = json.loads(from_env)
            except ValueError as e:
                raise ConfigError(f"{env}={from_env!r} is not a JSON object ({e}), e.g. "
                                  f"{env}='{{\"erase_ratio\": 0.1}}'", (env,)) from None
        if from_args is not None and from_env is not None and from_args != from_env:
            raise ConfigError(f"{env}={os.environ[env]!r} and vitdata_{key}: {from_args!r} (--config) disagree: set "
                              f"one", (env, f"vitdata_{key}"))
        value = from_args if from_args is not None else from_env
        sources[key] = f"vitdata_{key} (--config)" if from_args is not None else env
        if key == "curriculum_kwargs" and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{sources[key]} must be a mapping of schedule keywords, got {value!r}", (sources[key],))
        out[key] = value if value is not None else ({} if key == "curriculum_kwargs" else None)
    out["sources"] = sources
    return out


def _split_dir(root: str, split: str) -> str:
    for name in (split, "val" if split == "validation" else None):
        if name and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return root


def _brace_range(files: list[str]) -> str | None:
    """``["a-0000.tar", ..., "a-0009.tar"]`` -> ``"a-{0000..0009}.tar"``; None unless they are one numbered run."""
    parts = [re.fullmatch(r"(.*?)(\d+)(\.tar)", f) for f in files]
    if not parts or None in parts or len({(m.group(1), len(m.group(2)), m.group(3)) for m in parts}) != 1:
        return None
    nums = sorted(int(m.group(2)) for m in parts)
    if nums != list(range(nums[0], nums[0] + len(nums))):
        return None
    m, w = parts[0], len(parts[0].group(2))
    return f"{m.group(1)}{{{nums[0]:0{w}d}..{nums[-1]:0{w}d}}}{m.group(3)}"


def _shards(root: str, split: str, flag: str) -> str:
    """timm's WebDataset split -> vitdata's shard spec (see the module table)."""
    spec = split.split("|")[0]
    if "::" in spec:
        raise ConfigError(f"{flag} {split!r}: several shard patterns joined by '::'; vitdata reads one pattern or a "
                          f"directory of .tar shards", (flag,))
    if "tar" in spec or ".." in spec:
        return os.path.join(root, spec)
    for name in ("_info.json", "info.json"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path) as f:
                files = (json.load(f).get("splits", {}).get(spec) or {}).get("filenames")
            if files:
                pattern = _brace_range([os.path.basename(x) for x in files])
                if pattern:
                    return os.path.join(root, os.path.dirname(files[0]), pattern)
                raise ConfigError(f"{flag} {split!r}: the shards {path} lists for it are not one numbered run; "
                                  f"give them as a brace pattern, e.g. {flag} 'name-{{0000..0099}}.tar'", (flag,))
    raise ConfigError(f"{flag} {split!r}: no shard pattern and no {root}/_info.json naming that split; give the "
                      f"shards, e.g. {flag} 'imagenet-train-{{0000..1023}}.tar'", (flag,))


def _data(args) -> tuple[str, str | None]:
    """(train data, eval data: None = the train data, "" = no validation split)."""
    dataset = str(_get(args, "dataset", "") or "")
    kind = dataset.split("/")[0].lower()
    if kind not in FOLDER_DATASETS + ("wds",):
        raise ConfigError(f"--dataset {dataset!r}: vitdata reads ImageFolder trees and WebDataset .tar shards "
                          f"(--dataset wds/NAME) from disk", ("--dataset",))
    data_set = _get(args, "data_set")
    if data_set not in (None, "IMNET"):
        raise ConfigError(f"--data-set {data_set}: vitdata reads ImageFolder trees (the IMNET layout, "
                          f"DATA/train and DATA/val) and WebDataset shards", ("--data-set",))
    root = _get(args, "data_dir") or _get(args, "data") or _get(args, "data_path")
    if not root:
        raise ConfigError("the arguments give no data directory (--data-dir, DATA or --data-path)", ("data",))
    root = os.fspath(root)
    train_split, val_split = _get(args, "train_split", "train"), getattr(args, "val_split", "validation")
    if kind == "wds":
        train = _shards(root, train_split, "--train-split")
        return train, (_shards(root, val_split, "--val-split") if val_split else "")
    return _split_dir(root, train_split), (_split_dir(root, val_split) if val_split else "")


def _refuse(args) -> None:
    """The options vitdata cannot honour: ConfigError naming each."""
    def no(msg, *flags):
        raise ConfigError(msg, flags)

    if _get(args, "aug_splits", 0) or _get(args, "jsd_loss", False):
        no("--aug-splits / --jsd-loss need several augmented views of one sample, which vitdata's loader does not "
           "make", "--aug-splits", "--jsd-loss")
    mixing = _get(args, "mixup", 0) > 0 or _get(args, "cutmix", 0) > 0 or _get(args, "cutmix_minmax") is not None
    if mixing and _get(args, "prefetcher", False):
        no("Mixup/CutMix with timm's prefetcher on: timm then mixes in its collate function, which vitdata's loader "
           "does not call; run train.py with --no-prefetcher (mixup_fn then mixes in the loop; vitdata's batches "
           "are already normalised tensors on the device)", "--no-prefetcher")
    if _get(args, "class_map"):
        no(f"--class-map {args.class_map}: vitdata numbers the class folders of the training data in sorted order "
           f"(the index's class list); a class map would relabel them", "--class-map")
    size = _get(args, "input_size")
    chans = _get(args, "in_chans") or (size[0] if isinstance(size, (list, tuple)) and len(size) == 3 else 3)
    if int(chans) != 3 or _get(args, "input_img_mode") not in (None, "RGB"):
        no(f"--in-chans {chans} / --input-img-mode {_get(args, 'input_img_mode')}: vitdata decodes RGB images "
           f"(3 channels)", "--in-chans", "--input-img-mode")
    if _get(args, "naflex_loader", False):
        no("--naflex-loader: vitdata's loader makes batches of one fixed size, not NaFlex patch sequences",
           "--naflex-loader")
    if _get(args, "train_img_sizes") is not None:
        no(f"--train-img-sizes {args.train_img_sizes}: timm's own size schedule needs timm's loader; vitdata's "
           f"size curriculum is VITDATA_CURRICULUM=progressive-size (or efficienttrain)", "--train-img-sizes")


def _warn_unsupported(args, interp, aa, no_aug, out: list[str]) -> None:

    def off(name, why, default=0):
        v = _get(args, name, default)
        if v not in (default, None, False, 0, ""):
            out.append(f"{name} {v!r} ({why})")

    off("reprob", "timm's RandomErasing: no erasing; vitdata's PatchErasing is the curriculum keyword erase_ratio")
    off("vflip", "no vertical flip")
    if not aa and not no_aug:
        off("color_jitter", "no colour jitter")
    if hasattr(args, "interpolation") and _get(args, "train_interpolation", "") not in ("", interp):
        used = interp or "the model default"
        out.append(f"train_interpolation {args.train_interpolation!r} (the resize uses {used})")
    for name in ("aug_repeats", "repeated_aug", "epoch_repeats"):
        off(name, "each sample once per epoch")
    for name in ("train_num_samples", "val_num_samples", "train_batches_per_epoch"):
        off(name, "the epoch is the whole index")
    for name in ("grayscale_prob", "gaussian_blur_prob", "color_jitter_prob", "ThreeAugment", "src"):
        off(name, "not applied")
    if _get(args, "train_crop_mode") not in (None, "", "rrc"):
        out.append(f"train_crop_mode {args.train_crop_mode!r} (random-resized crop)")
    if out:
        warnings.warn("timm options vitdata does not run: " + "; ".join(out), UserWarning,
                      stacklevel=user_stacklevel())


def _flags(args, opts) -> dict:
    flags = {}
    for field, sources in FLAG_SOURCES.items():
        present = [(attr, flag) for attr, flag in sources if hasattr(args, attr)]
        given = [flag for attr, flag in present if getattr(args, attr) not in (None, "", {}, [])]
        if field in MODEL_FIELDS and present:      # set through the model's keywords, whatever set them now
            flags[field] = present[0][1]
        elif given or present:
            flags[field] = given[0] if given else present[-1][1]
    src = opts["sources"]
    flags.update({"schedule": src["curriculum"], "schedule.name": src["curriculum"],
                  "schedule.kwargs": src["curriculum_kwargs"], "oracle": src["oracle"]})
    return flags


def config_from_timm_args(cls, args, model=None, **overrides):
    """``cls.from_timm_args``: ``cls`` is :class:`~vitdata.loader.config.LoaderConfig`, which checks the sizes
    against ``model`` afterwards. ConfigErrors name the user's options (see the module docstring)."""
    opts = vitdata_options(args)
    flags = _flags(args, opts)
    try:
        return _config(cls, args, model, opts, flags, overrides)
    except ConfigError as e:
        raise e.named_as(flags) from None


def _config(cls, args, model, opts, flags, overrides):
    _refuse(args)
    if _get(args, "bce_loss", False) and opts["oracle"]:
        raise ConfigError(f"--bce-loss with the oracle ({opts['sources']['oracle']}={opts['oracle']}): the oracle "
                          f"needs a loss per sample, which timm's BinaryCrossEntropy does not give", ("--bce-loss", "oracle"))
    train, evaluation = _data(args)
    cfg = cls.from_timm_model(model) if model is not None else cls()
    a, o, e = cfg.augment, cfg.output, cfg.eval
    size = _get(args, "input_size")
    size = (size[-1] if isinstance(size, (list, tuple)) else size) or _get(args, "img_size")
    curriculum = opts["curriculum"]
    scheduled = curriculum not in (None, "constant")
    aa, no_aug = _get(args, "aa"), _get(args, "no_aug", False)
    randaug, magnitude, num_ops, notes = False, a.randaug_magnitude, a.randaug_num_ops, []
    if aa and not no_aug:
        magnitude, num_ops, ignored = parse_aa(str(aa))
        randaug = True
        if scheduled:   # the curriculum sets the magnitudes; --aa turns RandAugment on
            magnitude = num_ops = None
        elif ignored:
            notes.append(f"aa parts {'-'.join(ignored)} (a fixed magnitude {magnitude:g})")
    interp = _get(args, "interpolation") or None
    if not hasattr(args, "interpolation") and _get(args, "train_interpolation") in ("bilinear", "bicubic", "nearest"):
        interp = args.train_interpolation                 # DeiT: one --train-interpolation, eval bicubic too
    interp = interp or a.interpolation
    a = dataclasses.replace(a, scale=tuple(_get(args, "scale", a.scale)), ratio=tuple(_get(args, "ratio", a.ratio)),
                            hflip=float(_get(args, "hflip", a.hflip)), randaug=randaug, randaug_magnitude=magnitude,
                            randaug_num_ops=num_ops, interpolation=interp or None)
    if no_aug:
        a = dataclasses.replace(a, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug=False)
    mean, std = _get(args, "mean"), _get(args, "std")
    dtype = _get(args, "model_dtype") or _model_dtype(model) or o.dtype
    o = dataclasses.replace(o, mean=tuple(mean) if mean else o.mean, std=tuple(std) if std else o.std,
                            channels_last=bool(_get(args, "channels_last", False)), dtype=str(dtype),
                            device=str(_get(args, "device", "auto")))
    crop_pct = _get(args, "crop_pct", _get(args, "eval_crop_ratio", e.crop_pct))
    e = dataclasses.replace(e, data=evaluation, crop_pct=crop_pct,
                            batch_size=_get(args, "validation_batch_size"))
    epochs = _get(args, "epochs")
    sched = type(cfg.schedule)(name=curriculum or "constant", epochs=int(epochs) if epochs else None,
                               kwargs=dict(opts["curriculum_kwargs"]))
    _warn_unsupported(args, interp, aa, no_aug, notes)
    fields = dict(data=train, image_size=int(size) if size else cfg.image_size, augment=a, output=o, eval=e,
                  schedule=sched, batch_size=int(_get(args, "batch_size", cfg.batch_size)),
                  seed=int(_get(args, "seed", 0)), flags=flags)
    workers = _get(args, "workers", _get(args, "num_workers"))
    if workers is not None:
        fields["num_workers"] = int(workers)
    if _get(args, "target_key") is not None:
        fields["label_member"] = str(args.target_key)
    return dataclasses.replace(cfg, **fields).with_overrides(**overrides)   # a nested section given is merged


def _model_dtype(model) -> str | None:
    import torch

    p = next(iter(model.parameters()), None) if model is not None else None
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(getattr(p, "dtype", None))

