"""vitdata preview shows what the model sees and refuses bad arguments in one line."""
import numpy as np
import pytest

from vitdata.cli import main as cli_main
from vitdata.train.preview import model_view_rows
from vitdata.train.config import parse_config


@pytest.mark.parametrize("args, words", [
    (["--epoch", "two", "--epochs", "5"], "--epoch takes 0-based epoch numbers"),
    (["--epoch", "7", "--epochs", "5"], "--epoch 7 is outside the run's 5 epochs"),
    (["--data", "/nonexistent/root"], "--data /nonexistent/root does not exist"),
])
def test_bad_preview_arguments_are_one_line_errors(cache, capsys, args, words):
    assert cli_main(["preview", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_data_root_without_train_is_named(cache, tmp_path, capsys):
    (tmp_path / "root" / "images").mkdir(parents=True)
    assert cli_main(["preview", "--data", str(tmp_path / "root")]) == 1
    assert "holds no train/ directory" in capsys.readouterr().err


def test_the_preview_shows_randaugment_at_the_scheduled_magnitude(cache, tmp_path):
    from vitdata.data import selfid

    selfid.write_imagefolder(str(tmp_path / "d"), 16, num_classes=2, size=64)
    cfg = parse_config(["--recipe", "efficienttrain", "--epochs", "5"], "test")
    rows, knobs = model_view_rows(str(tmp_path / "d"), cfg, [0, 4], n=2)
    assert [len(r[1]) for r in rows] == [4, 4]                   # (as stored, model input) x 2
    assert knobs[0].randaug_magnitude < knobs[1].randaug_magnitude
    assert "RandAug m=" in rows[0][0] and "erase=" in rows[0][0]
    stored, seen = rows[1][1][0], rows[1][1][1]
    assert seen.shape[-1] == 3 and not (seen.shape == stored.shape and np.array_equal(seen, stored))


def test_the_run_reports_curriculum_grid_leaves_out_views_no_epoch_changes(cache, tmp_path):
    from vitdata.data import selfid
    from vitdata.train.report import curriculum_rows
    from vitdata.curriculum.named import make_schedule

    selfid.write_imagefolder(str(tmp_path / "d"), 8, num_classes=2, size=32)
    sched = make_schedule("efficienttrain", 5, 10, 32, patch_size=4)
    rows, titles, _ = curriculum_rows(str(tmp_path / "d"), sched, [0, 4], 4, (0.5,) * 3, (0.5,) * 3, n=2)
    assert titles == ["full", "low-pass"] * 2 and [len(r[1]) for r in rows] == [4, 4]
