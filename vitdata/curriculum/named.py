"""Named schedules: the seed papers' curricula as :class:`vitdata.curriculum.schedule.Schedule` s.

:func:`make_schedule` builds one by name (``constant``, ``efficienttrain``, ``efficienttrain++``, ``linear``,
``progressive-size``, and ``switches``: :func:`curriculum_schedule`, the schedule of ``vitdata train``'s
method switches). The rules and the Schedule class live in :mod:`vitdata.curriculum.schedule`.
"""
from __future__ import annotations

from typing import Any

from vitdata.errors import ConfigError, check_int
from vitdata.curriculum.schedule import (KNOBS, PSS, Constant, EpochTable, Ramp, Rule, Schedule, _round_half_up, combine)

# EfficientTrain (ICCV 2023) stages: fraction of the run where each stage starts, Fourier crop B at 224 px,
# RandAugment magnitude. At 300 epochs: 0-59 160/m1, 60-119 160/m3, 120-179 160/m5, 180-239 192/m7,
# 240-299 224/m9 (docs/methods.md §3.2, ET_training.py).
ET_STAGE_FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8)
ET_SIZES_224 = (160, 160, 160, 192, 224)
ET_MAGNITUDES = (1, 3, 5, 7, 9)
# EfficientTrain++ DeiT-S resolution list: one entry per segment, magnitude = segment index.
ETPP_SIZES_224 = (96, 96, 160, 160, 160, 160, 192, 192, 224, 224)


def _even(x: float) -> int:
    return 2 * _round_half_up(x / 2)


def _stage_table(starts: list[int], values: list[Any]) -> EpochTable:
    """EpochTable from stage starts that may collide in a short run: at equal starts the later stage wins."""
    table: dict[int, Any] = {}
    for s, v in zip(starts, values):
        table[s] = v
    keys = sorted(table)
    return EpochTable(tuple(keys), tuple(table[k] for k in keys))


def _on_grid(side: int, patch_size: int | None) -> int:
    """The side a Schedule with ``patch_size`` (rounding on) makes of ``side``."""
    return side if not patch_size else max(patch_size, patch_size * _round_half_up(side / patch_size))


def _stage_sides(sizes_224, image_size: int, patch_size: int | None) -> list[int]:
    """Each stage's side at ``image_size`` (scaled from 224, even, then on the patch grid; capped at full)."""
    return [min(image_size, _on_grid(_even(b * image_size / 224), patch_size)) for b in sizes_224]


def check_stages_kept(name: str, sizes_224, image_size: int, patch_size: int | None) -> None:
    """Refuse (ConfigError naming image_size and patch_size) when rounding the stages' sides to the patch grid
    merges stages the paper keeps apart (docs/methods.md §3.2: at 64 px with 16-px patches EfficientTrain's 160
    and 192 stages both become 48, ratio 0.75, instead of 0.714 and 0.857), and name a patch size and an
    image size that keep them apart. Sides that are not patch multiples are not an option: the ViT's patch
    embedding would drop or pad the remainder, so the tokens, and the saving, are those of a grid side."""
    want = len(set(_stage_sides(sizes_224, image_size, None)))
    got = _stage_sides(sizes_224, image_size, patch_size)
    if not patch_size or len(set(got)) == want:
        return
    patch = patch_keeping_stages(sizes_224, image_size, patch_size)
    patches = [patch] if patch else []
    images = [n for n in range(image_size + patch_size, 8 * image_size + 1, patch_size)
              if len(set(_stage_sides(sizes_224, n, patch_size))) == want]
    # Fields, not flags: a caller names its own options (ConfigError.named_as: --image-size, timm's --img-size).
    hint = " or ".join([f"patch_size {patches[0]}"] * bool(patches) + [f"image_size {images[0]}"] * bool(images))
    raise ConfigError(f"{name} at image_size {image_size} with patch_size {patch_size}: the stages' sides "
                      f"{_stage_sides(sizes_224, image_size, None)} become {got} on the {patch_size}-px patch grid, "
                      f"merging {want} distinct stages into {len(set(got))}; use {hint or 'a larger image'}",
                      ("image_size", "patch_size"))


def patch_keeping_stages(sizes_224, image_size: int, patch_size: int) -> int | None:
    """The largest patch size ``<= patch_size`` that divides ``image_size`` and keeps every stage of
    ``sizes_224`` apart on its grid at ``image_size`` (``patch_size`` itself when it does), or None."""
    want = len(set(_stage_sides(sizes_224, image_size, None)))
    for p in range(patch_size, 0, -1):
        if image_size % p == 0 and len(set(_stage_sides(sizes_224, image_size, p))) == want:
            return p
    return None


def et_stage_starts(epochs: int) -> list[int]:
    """First epoch of each EfficientTrain stage: ``int(fraction * epochs)``, truncated as the official code
    does (0/60/120/180/240 at 300 epochs; 0/2/4/7/9 at 12, where rounding would give 0/2/5/7/10)."""
    return [(k * epochs) // 5 for k in range(len(ET_STAGE_FRACTIONS))]  # fractions are k / 5, exactly


def _efficienttrain(epochs, spe, image_size, *, lowpass=True, sizes=ET_SIZES_224, magnitudes=ET_MAGNITUDES,
                    patch_size=None, augment_at="full"):
    if len(sizes) != len(ET_STAGE_FRACTIONS) or len(magnitudes) != len(ET_STAGE_FRACTIONS):
        raise ConfigError("efficienttrain needs 5 sizes and 5 magnitudes", ("sizes", "magnitudes"))
    check_stages_kept("efficienttrain", sizes, image_size, patch_size)
    starts = et_stage_starts(epochs)
    # Sizes scale with image_size / 224 and are rounded to even (the Fourier crop keeps B/2 frequencies
    # per side); a patch_size on the schedule rounds them further.
    scaled = [_even(b * image_size / 224) for b in sizes]
    size_rule = _stage_table(starts, [None if b >= image_size else b for b in scaled])
    rules = {"randaug_magnitude": _stage_table(starts, [float(m) for m in magnitudes])}
    if lowpass:
        rules.update(image_size=Constant(image_size), lowpass_size=size_rule)
    else:  # a Lanczos resize to B instead of the Fourier crop (what ET++ does)
        rules.update(_shrink_rules(image_size, size_rule, augment_at))
    return rules


AUGMENT_AT = ("full", "stage")


def _shrink_rules(image_size: int, size_rule: EpochTable, augment_at: str) -> dict:
    """Rules that bring the images to each stage's side ``size_rule`` (None: full size) by resizing.
    ``augment_at`` "full": EfficientTrain++'s released order (crop, flip and RandAugment at ``image_size``,
    then the batch's Lanczos resize to the stage's side, before normalising and erasing; docs/methods.md
    §3.2); "stage": crop straight to the stage's side and augment there (cheaper decode and augmentation,
    RandAugment's geometric ops then act at the low resolution)."""
    if augment_at == "full":
        return {"image_size": Constant(image_size), "lowpass_size": size_rule, "lowpass_filter": Constant("lanczos")}
    if augment_at == "stage":
        return {"image_size": _stage_table(list(size_rule.starts), [image_size if b is None else b
                                                                    for b in size_rule.values]),
                "lowpass_size": Constant(None)}
    raise ConfigError(f"augment_at must be one of {list(AUGMENT_AT)}, got {augment_at!r}", ("augment_at",))


def _efficienttrain_pp(epochs, spe, image_size, *, sizes=ETPP_SIZES_224, patch_size=None, augment_at="full"):
    # Segments cost the same compute: a segment at side r lasts ∝ (image_size / r)^2 real epochs. The
    # durations are scaled so the segments fill `epochs` and stage k starts at round_half_up(cumulative).
    check_stages_kept("efficienttrain++", sizes, image_size, patch_size)
    scaled = _stage_sides(sizes, image_size, patch_size)
    cost = [(image_size / r) ** 2 for r in scaled]
    total, acc, starts = sum(cost), 0.0, []
    for c in cost:
        starts.append(_round_half_up(acc / total * epochs))
        acc += c
    rules = _shrink_rules(image_size, _stage_table(starts, [None if r >= image_size else r for r in scaled]),
                          augment_at)
    rules["randaug_magnitude"] = _stage_table(starts, [float(k) for k in range(len(sizes))])
    return rules


def _linear(epochs, spe, image_size, *, magnitude=(0.0, 9.0), size=None, per="epoch", shape="linear",
            ramp_start=0, ramp_end=None):
    # Ramps span [ramp_start, ramp_end]; ramp_end defaults to the last epoch (per="epoch": the final
    # epoch reaches `end`) or the run's end (per="step").
    t1 = (epochs - 1 if per == "epoch" else epochs) if ramp_end is None else ramp_end
    rules: dict[str, Rule] = {"image_size": Constant(image_size)}
    if magnitude is not None:
        rules["randaug_magnitude"] = Ramp(float(magnitude[0]), float(magnitude[1]), ramp_start, t1, shape, per)
    if size is not None:
        rules["image_size"] = Ramp(float(size[0]), float(size[1]), ramp_start, t1, shape, per)
    return rules


PAPER_SIZE_EPOCH_STEP = 5  # 1-GPU/24 h best script: --epoch-step 5


def size_epoch_step(epochs: int, stages: int, epoch_step: int | None = None) -> int:
    """Epochs per size of the 1-GPU/24 h curriculum: the paper's 5 (``PAPER_SIZE_EPOCH_STEP``), shortened
    to ``epochs // stages`` when the run is too short for every size to get 5 epochs, so the last size is
    always reached and trained on (at least 1). An explicit ``epoch_step`` is kept, and refused
    (ConfigError) when the last size would start after the run."""
    if epoch_step is None:
        return max(1, min(PAPER_SIZE_EPOCH_STEP, epochs // stages))
    epoch_step = check_int(epoch_step, "size_epoch_step", 1)
    if (stages - 1) * epoch_step >= epochs:
        raise ConfigError(f"size epoch step {epoch_step}: the last of {stages} sizes would start at epoch "
                          f"{(stages - 1) * epoch_step} of a {epochs}-epoch run and never be trained on; use "
                          f"at most {max(1, (epochs - 1) // max(1, stages - 1))}", ("size_epoch_step", "epochs"))
    return epoch_step


def _progressive_size(epochs, spe, image_size, *, init_size=32, step_px=32, epoch_step=None):
    # 1-GPU/24 h curriculum: init_size, +step_px every epoch_step epochs, capped at image_size; the last size
    # runs to the end (the paper: 30 epochs of ramp, then 224 px until the 24 h budget ends).
    init_size = check_int(init_size, "init_size", 1)
    step_px = check_int(step_px, "step_px", 1)
    if init_size > image_size:
        raise ConfigError(f"init_size {init_size} exceeds image_size {image_size}", ("init_size", "image_size"))
    stages = -(-(image_size - init_size) // step_px) + 1
    sizes = [min(image_size, init_size + k * step_px) for k in range(stages)]
    if stages > epochs and epoch_step is None:
        # Fewer epochs than sizes: stage k starts at epoch k * epochs // stages; colliding starts keep the
        # later (larger) size, so the smallest sizes are skipped and the last one still gets its epoch.
        return {"image_size": _stage_table([k * epochs // stages for k in range(stages)], sizes)}
    step = size_epoch_step(epochs, stages, epoch_step)
    return {"image_size": EpochTable(tuple(k * step for k in range(stages)), tuple(sizes))}


def _constant(epochs, spe, image_size):
    return {"image_size": Constant(image_size)}


_BUILDERS = {"constant": _constant, "efficienttrain": _efficienttrain, "efficienttrain++": _efficienttrain_pp,
             "linear": _linear, "progressive-size": _progressive_size}
# "switches": the schedule of vitdata train's method switches, composed from the named ones above
# (:func:`curriculum_schedule`).
SCHEDULE_NAMES = (*_BUILDERS, "switches")


def make_schedule(name: str, epochs: int, steps_per_epoch: int, image_size: int = 224, **kw: Any) -> Schedule:
    """A named schedule for a run of ``epochs`` x ``steps_per_epoch`` at final side ``image_size``.

    Names and their own keywords:

    - ``constant``: every knob constant.
    - ``efficienttrain``: the ICCV stepwise table scaled to ``epochs`` (stages start at int(0.2k *
      epochs)), RandAug m 1/3/5/7/9, low-pass B 160/160/160/192/224 scaled by image_size / 224 and rounded
      to even; ``lowpass=False`` resizes to B instead; ``sizes``, ``magnitudes`` override the table.
    - ``efficienttrain++``: ET++ segments (``sizes``, default DeiT-S 96x2, 160x4, 192x2, 224x2) resized to,
      durations ∝ (image_size / r)^2 filling ``epochs``, magnitude = segment index.
      Both resize as ET++'s released code does (``augment_at="full"``: crop and augment at ``image_size``,
      then a Lanczos resize of the batch to the stage's side; ``"stage"`` crops straight to it).
    - ``linear``: ``magnitude=(start, end)`` (default (0, 9); None keeps it constant) and/or ``size=(start,
      end)``; ``per`` "epoch"|"step", ``shape`` "linear"|"cosine", ``ramp_start``/``ramp_end`` epochs.
    - ``progressive-size``: ``init_size`` 32, ``step_px`` 32, ``epoch_step`` (default: the paper's 5, shorter
      when the run is too short for every size to get 5 epochs, see :func:`size_epoch_step`).
    - ``switches``: ``vitdata train``'s method switches; the keywords of :func:`curriculum_schedule`
      (``curriculum``, ``size_curriculum``, ``pss``, ``erase_ratio``, ``randaug_magnitude``, ...).

    ``efficienttrain`` and ``efficienttrain++`` refuse a ``patch_size`` whose grid would merge their stages
    (:func:`check_stages_kept`).

    Keywords for every name: ``patch_size``, ``round_sizes`` (see :class:`Schedule`); ``pss`` ("cyclic" |
    "linear" | "cosine") with ``pss_start`` 0.8, ``pss_end`` -0.1, ``pss_cooldown`` for the keep ratio; and
    any Knobs field the schedule does not set itself, as a constant or a Rule (e.g. ``erase_ratio=0.3``).
    """
    if name not in SCHEDULE_NAMES:
        raise ConfigError(f"unknown schedule {name!r}; known: {list(SCHEDULE_NAMES)}", ("schedule",))
    epochs = check_int(epochs, "epochs", 1)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
    image_size = check_int(image_size, "image_size", 1)
    if name == "switches":
        try:
            return curriculum_schedule(epochs, steps_per_epoch, image_size, **kw)
        except TypeError as e:
            raise ConfigError(f"bad keywords for schedule {name!r}: {e}", tuple(kw)) from e
    common = {k: kw.pop(k) for k in ("patch_size", "round_sizes") if k in kw}
    pss = kw.pop("pss", None)
    pss_kw = {k: kw.pop(f"pss_{k}") for k in ("start", "end", "cooldown") if f"pss_{k}" in kw}
    knob_kw = {k: kw.pop(k) for k in list(kw) if k in KNOBS}
    if name in ("efficienttrain", "efficienttrain++") and common.get("round_sizes", True):
        kw["patch_size"] = common.get("patch_size")
    try:
        rules = _BUILDERS[name](epochs, steps_per_epoch, image_size, **kw)
    except TypeError as e:
        raise ConfigError(f"bad keywords for schedule {name!r}: {e}", tuple(kw)) from e
    clash = set(knob_kw) & set(rules)
    if clash:
        raise ConfigError(f"schedule {name!r} sets {sorted(clash)} itself; use combine() to override",
                          tuple(sorted(clash)))
    rules.update(knob_kw)
    if pss is not None:
        if "keep_ratio" in rules:
            raise ConfigError("pass either pss or keep_ratio", ("pss", "keep_ratio"))
        rules["keep_ratio"] = PSS(pss, **pss_kw)
    elif pss_kw:
        raise ConfigError(f"{sorted('pss_' + k for k in pss_kw)} given without pss", ("pss",))
    label = name if pss is None else f"{name}+pss-{pss}"
    return Schedule(epochs=epochs, steps_per_epoch=steps_per_epoch, name=label, **common, **rules)


def curriculum_schedule(epochs: int, steps_per_epoch: int, image_size: int, *, patch_size: int = 16,
                        curriculum: str | None = None, size_curriculum: bool = False, pss: str | None = None,
                        erase_ratio: float = 0.0, randaug_magnitude: float = 5.0,
                        size_epoch_step: int | None = None, curriculum_magnitude: str = "paper",
                        augment_at: str = "full") -> Schedule:
    """The schedule of ``vitdata train``'s method switches (``make_schedule("switches", ...)``, which the
    loader builds from ``ScheduleConfig(name="switches", kwargs=...)``): a data ``curriculum`` (a named schedule;
    None = constant at ``randaug_magnitude``), with the 1-GPU/24 h progressive size on top when
    ``size_curriculum`` (from 2 patches, growing by 2 patches every ``size_epoch_step`` epochs, default
    :func:`size_epoch_step`: 32 -> 224 px at patch 16), the PSS keep ratio ``pss`` and a constant
    PatchErasing ``erase_ratio``. ``curriculum_magnitude="run"`` scales EfficientTrain's weak-to-strong
    RandAugment magnitudes (1, 3, 5, 7, 9) so that its last stage uses ``randaug_magnitude``, the run's own
    (the paper ends at 9, the magnitude of its DeiT baseline); "paper" keeps the paper's numbers.
    ``augment_at``: efficienttrain++'s order (see :func:`make_schedule`)."""
    extra: dict[str, Any] = {"patch_size": patch_size, "erase_ratio": erase_ratio}
    if curriculum_magnitude not in ("paper", "run"):
        raise ConfigError(f"curriculum_magnitude must be 'paper' or 'run', got {curriculum_magnitude!r}",
                          ("curriculum_magnitude",))
    if curriculum_magnitude == "run":
        if curriculum != "efficienttrain":
            raise ConfigError("curriculum_magnitude 'run' scales EfficientTrain's magnitudes; it needs curriculum "
                              f"'efficienttrain', got {curriculum!r}", ("curriculum_magnitude", "curriculum"))
        extra["magnitudes"] = tuple(m * randaug_magnitude / ET_MAGNITUDES[-1] for m in ET_MAGNITUDES)
    if pss:
        extra["pss"] = pss
    if curriculum == "efficienttrain++":
        extra["augment_at"] = augment_at
    name = curriculum or "constant"
    if name == "constant":
        extra["randaug_magnitude"] = randaug_magnitude
    sched = make_schedule(name, epochs, steps_per_epoch, image_size, **extra)
    if size_curriculum:
        sizes = make_schedule("progressive-size", epochs, steps_per_epoch, image_size,
                              init_size=min(2 * patch_size, image_size), step_px=2 * patch_size, patch_size=patch_size,
                              epoch_step=size_epoch_step)
        sched = combine(sched, image_size=sizes)
    return sched


