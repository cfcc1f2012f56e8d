"""vitdata preview (the curriculum grid alone) and vitdata.train.report (plots and summary from a JSONL log)."""
import json

import numpy as np
import pytest
import torch

from vitdata.train.preview import main as preview_main
from vitdata.train.report import views, write_report
from vitdata.curriculum.schedule import Knobs


def test_preview_writes_the_grid_for_several_epochs(cache, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert preview_main(["--synthetic-samples", "300", "--epoch", "0,4", "--recipe", "efficienttrain",
                         "--patch-erasing", "0.3", "--epochs", "5", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "epoch 0:" in text and "lowpass_size=48" in text and "epoch 4:" in text


def test_views_apply_only_the_curriculum_operations():
    x = torch.randn(2, 3, 32, 32)
    v = views(x, Knobs(image_size=32, lowpass_size=16, erase_ratio=0.5), patch_size=8)
    assert v["full"] is x and v["low-pass"].shape == (2, 3, 16, 16)
    erased = (v["erased"] == 0).all(dim=1).float().mean().item()
    assert erased == pytest.approx(0.5, abs=0.01)  # 8 of 16 cells zeroed
    same = views(x, Knobs(image_size=32), patch_size=8)
    assert same["low-pass"] is x and same["erased"] is x


def test_report_writes_plots_and_summary_from_a_log(tmp_path):
    log = tmp_path / "log.jsonl"
    recs = [{"kind": "step", "step": i, "epoch": i / 10, "time": i * 0.5, "loss": 2 - i / 20, "lr": 1e-3,
             "img_s": 400.0, "data_ms": 5.0, "step_ms": 200.0,
             "knobs": {"image_size": 32, "lowpass_size": None, "randaug_magnitude": 5.0, "erase_ratio": 0.0,
                       "keep_ratio": 1.0, "drloc_lambda": 0.0}} for i in range(20)]
    recs += [{"kind": "eval", "epoch": 1, "step": 10, "time": 5.0, "top1": 40.0, "top5": 90.0, "loss": 1.5},
             {"kind": "eval", "epoch": 2, "step": 20, "time": 10.0, "top1": 60.0, "top5": 95.0, "loss": 1.0},
             {"kind": "epoch", "epoch": 1, "time": 5.0, "oracle": {"ddp_e": 0.2, "ddp_h": 0.5, "kar": 0.0}},
             {"kind": "epoch", "epoch": 2, "time": 10.0, "oracle": {"ddp_e": 0.4, "ddp_h": 0.3, "kar": 0.2}}]
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n{\"kind\": \"st")  # torn last line
    samples = [("epoch 0", np.zeros((4, 8, 8, 3), np.uint8)), ("epoch 1", [np.ones((4, 4, 3), np.uint8)] * 2)]
    path = write_report(str(tmp_path / "report"), str(log), {"model": "vit", "epochs": 2}, samples)
    text = open(path).read()
    assert "final val top-1 60.00 %" in text and "best top-1 60.00 % at epoch 2" in text
    for name in ("loss_acc.png", "throughput.png", "knobs.png", "oracle.png", "samples.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


@pytest.mark.parametrize("mean, std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
                                       ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # Inception / many timm ViTs
                                       ((0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758))])  # CLIP
def test_to_uint8_undoes_the_mean_and_std_the_images_were_normalised_with(mean, std):
    from vitdata.train.report import to_uint8
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    x = (pixels / 255 - np.array(mean)) / np.array(std)
    x = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)  # (N, 3, H, W) as the loader delivers
    np.testing.assert_array_equal(to_uint8(x, mean, std), pixels)
