"""`vitdata bench decode` on tiny data: every route (levels included) timed at every size, the ratios follow
from the figures, and the record carries README lines."""
import json

import pytest

from vitdata import bench
from vitdata.bench import decode as bench_decode


def test_every_route_is_timed_at_every_size_and_the_ratios_follow(tiny_folder, tmp_path):
    path = tmp_path / "d.json"
    assert bench.main(["decode", "--data", str(tiny_folder), "--images", "8", "--sizes", "8,16", "--repeats", "1",
                       "--json", str(path)]) == 0
    rec = json.loads(path.read_text())
    assert rec["what"] == "decode" and rec["settings"]["sizes"] == [8, 16]
    rows = rec["sizes"]
    for size in ("8", "16"):
        r = rows[size]
        assert all(r[k] > 0 for k in bench_decode.ROUTES)
        assert r["dali_reduced_vs_roi"] == pytest.approx(r["dali-reduced"] / r["dali-roi"])
        assert r["pillow_reduced_vs_full"] == pytest.approx(r["pillow-reduced"] / r["pillow-full"])
        assert r["dali_levels_vs_roi"] == pytest.approx(r["dali-levels"] / r["dali-roi"])
        assert r["pillow_levels_vs_full"] == pytest.approx(r["pillow-levels"] / r["pillow-full"])
        for k in bench_decode.ROUTES:
            assert r["vs_largest"][k] == pytest.approx(r[k] / rows["16"][k])
    assert rows["8"]["reduced_share"] > 0     # 48 px images, 8 px output: windows of >= 16 px reduce
    assert rows["8"]["level_share"] > 0       # and read a level (JPEGs of >= 32 px have a 1/2 level)
    assert rec["settings"]["levels_bytes"]["2"] > 0
    assert rec["headline"] and all({"measured", "figure", "compared"} <= set(h) for h in rec["headline"])
