"""LoaderConfig.from_timm_args with a namespace carrying timm 1.0 train.py's option names and defaults
(timm 1.0 as installed here ships no train.py, so its parser cannot be imported)."""
import argparse
import os

import pytest
import timm

from vitdata import ConfigError, LoaderConfig
from vitdata.loader.config import ScheduleConfig


def timm_train_args(**kw) -> argparse.Namespace:
    """The data-related options of timm 1.0's train.py, at their defaults (as its parser sets them)."""
    ns = dict(data=None, data_dir=None, dataset="", train_split="train", val_split="validation", num_classes=None,
              img_size=None, in_chans=None, input_size=None, crop_pct=None, mean=None, std=None, interpolation="",
              batch_size=128, validation_batch_size=None, channels_last=False, no_aug=False, train_crop_mode=None,
              scale=[0.08, 1.0], ratio=[3. / 4., 4. / 3.], hflip=0.5, vflip=0.0, color_jitter=0.4,
              color_jitter_prob=None, grayscale_prob=None, gaussian_blur_prob=None, aa=None, aug_repeats=0,
              aug_splits=0, jsd_loss=False, bce_loss=False, reprob=0.0, remode="pixel", recount=1, resplit=False,
              mixup=0.0, cutmix=0.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
              mixup_off_epoch=0, smoothing=0.1, train_interpolation="random", epochs=300, workers=4, seed=42,
              no_prefetcher=False, device="cuda", amp=False, amp_dtype="float16")
    ns.update(kw)
    ns["prefetcher"] = not ns["no_prefetcher"]
    return argparse.Namespace(**ns)


@pytest.fixture
def root(tmp_path):
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "c0")
    return str(tmp_path)


def test_timm_train_options_map_onto_the_loader_config(root):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    args = timm_train_args(data_dir=root, aa="rand-m7-n3-mstd0.5-inc1", batch_size=64, validation_batch_size=32,
                           scale=[0.35, 1.0], hflip=0.25, channels_last=True, epochs=90, workers=3, seed=5,
                           crop_pct=0.95, no_prefetcher=True, mixup=0.8, train_interpolation="")
    with pytest.warns(UserWarning, match="aa parts mstd0.5-inc1"):
        cfg = LoaderConfig.from_timm_args(args, model)
    assert cfg.data == os.path.join(root, "train") and cfg.eval.data == os.path.join(root, "val")
    assert cfg.image_size == 224 and cfg.augment.patch_size == 16
    assert (cfg.augment.randaug, cfg.augment.randaug_magnitude, cfg.augment.randaug_num_ops) == (True, 7.0, 3)
    assert cfg.augment.scale == (0.35, 1.0) and cfg.augment.hflip == 0.25
    assert cfg.batch_size == 64 and cfg.eval.batch_size == 32 and cfg.eval.crop_pct == 0.95
    assert cfg.output.channels_last and cfg.output.device == "cuda"
    assert cfg.schedule.epochs == 90 and cfg.num_workers == 3 and cfg.seed == 5
    assert cfg.output.mean == tuple(model.pretrained_cfg["mean"])


def test_unsupported_timm_options_are_named_with_what_they_become(root):
    args = timm_train_args(data_dir=root, reprob=0.25, vflip=0.5, aa=None)
    with pytest.warns(UserWarning) as rec:
        cfg = LoaderConfig.from_timm_args(args)
    text = str(rec[0].message)
    for what in ("reprob 0.25", "no erasing", "vflip 0.5", "color_jitter 0.4", "train_interpolation 'random'"):
        assert what in text
    assert cfg.augment.randaug is False and cfg.image_size == 224


@pytest.mark.parametrize("change, field", [
    (dict(dataset="torch/cifar10"), "dataset"),
    (dict(aug_splits=3), "aug_splits"),
    (dict(mixup=0.8), "prefetcher"),                 # prefetcher on: timm would mix in its collate
    (dict(aa="original", no_prefetcher=True), "aa"),
])
def test_timm_options_vitdata_cannot_honour_are_refused(root, change, field):
    with pytest.raises(ConfigError, match=field):
        LoaderConfig.from_timm_args(timm_train_args(data_dir=root, **change))


def test_a_size_changing_schedule_needs_a_dynamic_size_model(root):
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    args = timm_train_args(data_dir=root, no_prefetcher=True, train_interpolation="", color_jitter=0.0)
    with pytest.raises(ConfigError, match="dynamic_img_size=True"):
        LoaderConfig.from_timm_args(args, fixed, schedule=ScheduleConfig(name="efficienttrain"))
    dynamic = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, dynamic_img_size=True)
    cfg = LoaderConfig.from_timm_args(args, dynamic, schedule=ScheduleConfig(name="efficienttrain"))
    assert cfg.schedule.name == "efficienttrain" and cfg.schedule.epochs == 300


def test_from_timm_model_refuses_a_fixed_size_model_with_a_size_schedule():
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    with pytest.raises(ConfigError, match="dynamic_img_size=True"):
        LoaderConfig.from_timm_model(fixed, data="x", schedule=ScheduleConfig(name="efficienttrain", epochs=10))


def test_a_curriculum_schedule_without_epochs_is_refused():
    from vitdata.loader.config import check_config

    with pytest.raises(ConfigError, match=r"schedule.epochs.*collapse"):
        check_config(LoaderConfig(data="x", schedule=ScheduleConfig(name="efficienttrain")), "train")
