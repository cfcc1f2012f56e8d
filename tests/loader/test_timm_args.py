"""LoaderConfig.from_timm_args with namespaces carrying the option names and defaults of timm's train.py and of a
DeiT-style main.py (the installed timm ships no train.py, so its parser cannot be imported: the namespaces
below list the data options of timm's train.py at the commit the README's diff names)."""
import argparse
import json
import os

import pytest
import timm

from vitdata import ConfigError, LoaderConfig
from vitdata.loader.config import ScheduleConfig


def timm_train_args(**kw) -> argparse.Namespace:
    """The data-related options of timm's train.py, at their defaults (as its parser sets them)."""
    ns = dict(data=None, data_dir=None, dataset="", train_split="train", val_split="validation", num_classes=None,
              img_size=None, in_chans=None, input_size=None, crop_pct=None, mean=None, std=None, interpolation="",
              batch_size=128, validation_batch_size=None, channels_last=False, no_aug=False, train_crop_mode=None,
              scale=[0.08, 1.0], ratio=[3. / 4., 4. / 3.], hflip=0.5, vflip=0.0, color_jitter=0.4,
              color_jitter_prob=None, grayscale_prob=None, gaussian_blur_prob=None, aa=None, aug_repeats=0,
              aug_splits=0, jsd_loss=False, bce_loss=False, reprob=0.0, remode="pixel", recount=1, resplit=False,
              mixup=0.0, cutmix=0.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
              mixup_off_epoch=0, smoothing=0.1, train_interpolation="random", epochs=300, workers=4, seed=42,
              no_prefetcher=False, device="cuda", amp=False, amp_dtype="float16", model_dtype=None, class_map="",
              epoch_repeats=0.0, train_num_samples=None, val_num_samples=None, input_img_mode=None,
              input_key=None, target_key=None, naflex_loader=False, train_img_sizes=None,
              train_batches_per_epoch=None, model="vit_tiny_patch16_224", model_kwargs={})
    ns.update(kw)
    ns["prefetcher"] = not ns["no_prefetcher"]
    return argparse.Namespace(**ns)


def deit_args(**kw) -> argparse.Namespace:
    """The data-related options of DeiT's main.py (facebookresearch/deit), at their defaults."""
    ns = dict(batch_size=64, epochs=300, input_size=224, color_jitter=0.3, aa="rand-m9-mstd0.5-inc1",
              smoothing=0.1, train_interpolation="bicubic", repeated_aug=True, ThreeAugment=False, src=False,
              reprob=0.25, remode="pixel", recount=1, resplit=False, mixup=0.8, cutmix=1.0, cutmix_minmax=None,
              mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch", data_path="/datasets/imagenet",
              data_set="IMNET", device="cuda", seed=0, eval_crop_ratio=0.875, num_workers=10, pin_mem=True,
              bce_loss=False, model="deit_tiny_patch16_224")
    ns.update(kw)
    return argparse.Namespace(**ns)


@pytest.fixture
def root(tmp_path):
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "c0")
    return str(tmp_path)


@pytest.fixture(autouse=True)
def no_vitdata_env(monkeypatch):
    for name in ("VITDATA_CURRICULUM", "VITDATA_CURRICULUM_KWARGS", "VITDATA_ORACLE"):
        monkeypatch.delenv(name, raising=False)


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
    args = timm_train_args(data_dir=root, reprob=0.25, vflip=0.5, aa=None, epoch_repeats=2.0, train_num_samples=100)
    with pytest.warns(UserWarning) as rec:
        cfg = LoaderConfig.from_timm_args(args)
    text = str(rec[0].message)
    for what in ("reprob 0.25", "no erasing", "vflip 0.5", "color_jitter 0.4", "train_interpolation 'random'",
                 "epoch_repeats 2.0", "train_num_samples 100"):
        assert what in text
    assert cfg.augment.randaug is False and cfg.image_size == 224


@pytest.mark.parametrize("change, flag", [
    (dict(dataset="torch/cifar10"), "--dataset"),
    (dict(dataset="hfds/imagenet-1k"), "--dataset"),
    (dict(aug_splits=3), "--aug-splits"),
    (dict(mixup=0.8), "--no-prefetcher"),                 # prefetcher on: timm would mix in its collate
    (dict(aa="original", no_prefetcher=True), "--aa"),
    (dict(class_map="map.txt"), "--class-map"),
    (dict(in_chans=1), "--in-chans"),
    (dict(input_size=[1, 224, 224]), "--in-chans"),
    (dict(naflex_loader=True), "--naflex-loader"),
    (dict(train_img_sizes=[128, 192]), "VITDATA_CURRICULUM=progressive-size"),
])
def test_timm_options_vitdata_cannot_honour_are_refused_naming_the_option(root, change, flag):
    with pytest.raises(ConfigError, match=flag):
        LoaderConfig.from_timm_args(timm_train_args(data_dir=root, **change))


def test_no_validation_split_means_no_eval_data_and_an_eval_loader_is_refused(root):
    from vitdata.loader.config import check_config

    cfg = LoaderConfig.from_timm_args(timm_train_args(data_dir=root, val_split="", train_interpolation="",
                                                      color_jitter=0.0))
    assert cfg.eval.data == ""
    with pytest.raises(ConfigError, match=r"\[--val-split\] no evaluation data"):
        try:
            check_config(cfg, "eval")
        except ConfigError as e:
            raise e.named_as(cfg.flags)


def test_the_model_dtype_is_the_batches_dtype(root):
    args = timm_train_args(data_dir=root, model_dtype="bfloat16", train_interpolation="", color_jitter=0.0)
    assert LoaderConfig.from_timm_args(args).output.dtype == "bfloat16"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4).bfloat16()
    args = timm_train_args(data_dir=root, train_interpolation="", color_jitter=0.0)
    assert LoaderConfig.from_timm_args(args, model).output.dtype == "bfloat16"


def test_webdataset_splits_become_shard_patterns(tmp_path):
    args = timm_train_args(data_dir=str(tmp_path), dataset="wds/imagenet", train_split="train-{0000..0009}.tar|1000",
                           val_split="val-{00..01}.tar", target_key="cls", train_interpolation="", color_jitter=0.0)
    cfg = LoaderConfig.from_timm_args(args)
    assert cfg.data == str(tmp_path / "train-{0000..0009}.tar") and cfg.eval.data == str(tmp_path / "val-{00..01}.tar")
    assert cfg.label_member == "cls"
    (tmp_path / "_info.json").write_text(json.dumps({"splits": {"train": {"filenames": [
        f"shards/in-train-{i:03d}.tar" for i in range(3)]}}}))
    args = timm_train_args(data_dir=str(tmp_path), dataset="wds/imagenet", val_split="", train_interpolation="",
                           color_jitter=0.0)
    assert LoaderConfig.from_timm_args(args).data == str(tmp_path / "shards" / "in-train-{000..002}.tar")
    with pytest.raises(ConfigError, match=r"--val-split 'validation'.*_info.json"):
        LoaderConfig.from_timm_args(timm_train_args(data_dir=str(tmp_path), dataset="wds/imagenet"))


def test_the_curriculum_and_the_oracle_come_from_the_environment_or_a_timm_config_key(root, monkeypatch):
    from vitdata.loader.timm_args import vitdata_options

    dynamic = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, dynamic_img_size=True)
    monkeypatch.setenv("VITDATA_CURRICULUM", "efficienttrain")
    monkeypatch.setenv("VITDATA_ORACLE", "data-centric")
    args = timm_train_args(data_dir=root, epochs=30, aa="rand-m9-n2", no_prefetcher=True, train_interpolation="",
                           color_jitter=0.0)
    cfg = LoaderConfig.from_timm_args(args, dynamic)
    assert (cfg.schedule.name, cfg.schedule.epochs) == ("efficienttrain", 30)
    assert cfg.augment.randaug and cfg.augment.randaug_magnitude is None      # the curriculum's magnitudes
    assert vitdata_options(args)["oracle"] == "data-centric"
    monkeypatch.delenv("VITDATA_CURRICULUM")
    keyed = timm_train_args(data_dir=root, vitdata_curriculum="linear",          # a key of timm's --config YAML
                            vitdata_curriculum_kwargs={"magnitude": [0, 9]}, train_interpolation="", color_jitter=0.0)
    cfg = LoaderConfig.from_timm_args(keyed, dynamic)
    assert cfg.schedule.name == "linear" and cfg.schedule.kwargs == {"magnitude": [0, 9]}
    monkeypatch.setenv("VITDATA_CURRICULUM", "efficienttrain")
    with pytest.raises(ConfigError, match="VITDATA_CURRICULUM.*disagree"):
        LoaderConfig.from_timm_args(keyed, dynamic)


def test_errors_name_the_users_flags_not_vitdatas_fields(root, monkeypatch):
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    monkeypatch.setenv("VITDATA_CURRICULUM", "efficienttrain")
    args = timm_train_args(data_dir=root, no_prefetcher=True, train_interpolation="", color_jitter=0.0)
    with pytest.raises(ConfigError) as e:
        LoaderConfig.from_timm_args(args, fixed)
    assert "[VITDATA_CURRICULUM, --model-kwargs dynamic_img_size=True]" in str(e.value)
    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=64,
                              dynamic_img_size=True)
    with pytest.raises(ConfigError) as e:
        LoaderConfig.from_timm_args(args, small)    # 16-px patches at 64 px merge EfficientTrain's stages
    text = str(e.value)
    assert "--model-kwargs img_size=64" in text and "--model-kwargs patch_size=8" in text
    assert "--patch-size" not in text and "--image-size" not in text and "image_size" not in text
    monkeypatch.setenv("VITDATA_CURRICULUM", "no-such-curriculum")
    with pytest.raises(ConfigError, match=r"^\[VITDATA_CURRICULUM\] unknown schedule"):
        LoaderConfig.from_timm_args(args, small)
    monkeypatch.delenv("VITDATA_CURRICULUM")
    with pytest.raises(ConfigError, match=r"^\[--batch-size\] --batch-size must be a positive int, got 0"):
        LoaderConfig.from_timm_args(timm_train_args(data_dir=root, batch_size=0, train_interpolation="",
                                                    color_jitter=0.0))


def test_a_deit_style_namespace_maps_too(root):
    with pytest.warns(UserWarning) as rec:
        cfg = LoaderConfig.from_timm_args(deit_args(data_path=root, device="cpu"))
    text = str(rec[0].message)
    assert "reprob 0.25" in text and "repeated_aug True" in text and "mstd0.5-inc1" in text
    assert cfg.data == os.path.join(root, "train") and cfg.eval.data == os.path.join(root, "val")
    assert cfg.image_size == 224 and cfg.eval.crop_pct == 0.875 and cfg.num_workers == 10
    assert cfg.augment.interpolation == "bicubic" and cfg.augment.randaug_magnitude == 9.0
    with pytest.raises(ConfigError, match=r"\[--data-set\]"):
        LoaderConfig.from_timm_args(deit_args(data_path=root, data_set="CIFAR"))
    with pytest.raises(ConfigError, match=r"\[--input-size\] --input-size must be an int >= 8"):
        LoaderConfig.from_timm_args(deit_args(data_path=root, input_size=4, repeated_aug=False, reprob=0.0))


def test_a_size_changing_schedule_needs_a_dynamic_size_model(root):
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    args = timm_train_args(data_dir=root, no_prefetcher=True, train_interpolation="", color_jitter=0.0)
    with pytest.raises(ConfigError, match="dynamic_img_size=True"):
        LoaderConfig.from_timm_args(args, fixed, schedule=ScheduleConfig(name="efficienttrain"))
    dynamic = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, dynamic_img_size=True)
    cfg = LoaderConfig.from_timm_args(args, dynamic, schedule=ScheduleConfig(name="efficienttrain"))
    assert cfg.schedule.name == "efficienttrain" and cfg.schedule.epochs == 300


def test_a_fixed_size_model_refuses_another_image_size(root):
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    args = timm_train_args(data_dir=root, img_size=160, train_interpolation="", color_jitter=0.0)
    with pytest.raises(ConfigError, match=r"\[--img-size, --model-kwargs dynamic_img_size=True\] --img-size 160"):
        LoaderConfig.from_timm_args(args, fixed)


def test_from_timm_model_refuses_a_fixed_size_model_with_a_size_schedule():
    fixed = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    with pytest.raises(ConfigError, match="dynamic_img_size=True"):
        LoaderConfig.from_timm_model(fixed, data="x", schedule=ScheduleConfig(name="efficienttrain", epochs=10))


def test_a_curriculum_schedule_without_epochs_is_refused():
    from vitdata.loader.config import check_config

    with pytest.raises(ConfigError, match=r"schedule.epochs.*collapse"):
        check_config(LoaderConfig(data="x", schedule=ScheduleConfig(name="efficienttrain")), "train")
