"""`vitdata bench png-check` on tiny data: every route timed, the added cost and its ratios follow from the
figures, the process's memory of sound files is left as found, and the record carries README lines."""
import json

import pytest

from vitdata import bench
from vitdata.bench import png_check
from vitdata.data import pngdata


def test_every_route_is_timed_and_the_ratios_follow(tiny_folder, tmp_path):
    path = tmp_path / "p.json"
    assert bench.main(["png-check", "--data", str(tiny_folder), "--images", "6", "--repeats", "1",
                       "--json", str(path)]) == 0
    rec = json.loads(path.read_text())
    assert rec["what"] == "png-check" and rec["settings"]["images"] == 6
    r, added = rec["ms_per_file"], rec["added_ms"]
    assert all(r[k] > 0 for k in png_check.ROUTES)
    assert added["epoch_0_ms"] == pytest.approx(r["check-first"] - r["walk"])
    assert added["later_epochs_ms"] == pytest.approx(r["check-again"] - r["walk"])
    assert rec["ratios"]["epoch_0_ms_vs_dali"] == pytest.approx(added["epoch_0_ms"] / r["dali"])
    assert not pngdata._sound
    assert len(rec["headline"]) == 2 and all({"measured", "figure", "compared"} <= set(h) for h in rec["headline"])


def test_generated_pngs_when_no_data_is_given():
    pngs = png_check._pngs(None, 3)
    assert len(pngs) == 3 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
