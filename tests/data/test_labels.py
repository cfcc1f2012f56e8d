"""docs/reliability.md I5: ``.cls`` labels that lie. A huge number is that one sample's ``bad_label`` with
memory flat; without classes.json a label far beyond the labels seen is refused (or that sample's
``bad_label``), never a class count of a million, while the label sets of real datasets pass."""
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from vitdata.data import selfid
from vitdata.errors import DataError
from vitdata.data.index import build_index
from vitdata.data.shards import LABEL_GAP, MAX_LABEL, labels_beyond_a_gap


def _tar(path, labels, extra=()):
    """One sample per label (``k<i>.jpg`` + ``k<i>.cls``), then ``extra`` (key, raw .cls bytes) samples."""
    jpg = selfid.encode(selfid.make_image(0, 0, 16))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for key, cls in [(f"k{i}", str(y).encode()) for i, y in enumerate(labels)] + list(extra):
            for name, data in ((f"{key}.jpg", jpg), (f"{key}.cls", cls)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return str(path)


# -- item 5: huge numbers --------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))   # 1 GiB of address space for everything
    from vitdata.errors import DataError
    from vitdata.data.index import build_index
    idx = build_index(sys.argv[1], bad_labels="mark")
    try:
        build_index(sys.argv[1])
        raised = None
    except DataError as e:
        raised = str(e)
    print(json.dumps({"n": len(idx), "classes": idx.num_classes, "labels": idx.label.tolist(),
                      "skipped": idx.skipped, "raised": raised}))
""")


@pytest.mark.parametrize("huge", [b"100000000000000000000000", str(2 ** 64).encode(), b"9" * 64])
def test_a_huge_label_is_that_samples_bad_label_and_memory_stays_small(tmp_path, huge):
    """Before: the index built a class list as long as the number (20 GB RSS, then the OOM killer). Here
    the build runs under a 1 GiB address-space limit and must finish."""
    shard = _tar(tmp_path / "s.tar", [0, 1, 2, 3], extra=[("huge", huge)])
    script = tmp_path / "m.py"
    script.write_text(MEMORY_SCRIPT)
    r = subprocess.run([sys.executable, str(script), shard], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["n"] == 5 and out["classes"] == 4 and out["labels"] == [0, 1, 2, 3, -1]
    assert [s["reason"] for s in out["skipped"]] == ["bad_label"]
    assert "'huge'" in out["skipped"][0]["detail"] and str(MAX_LABEL) in out["skipped"][0]["detail"]
    assert out["raised"] is not None and "bad_label" in out["raised"] and "'huge'" in out["raised"]
    print(f"\n{out['raised']}")


def test_the_largest_accepted_label_is_2_to_the_24_minus_1(tmp_path):
    idx = build_index(_tar(tmp_path / "s.tar", [0], extra=[("top", str(MAX_LABEL + 1).encode())]), bad_labels="mark")
    assert idx.label.tolist() == [0, -1]
    with pytest.raises(DataError, match=r"label 16777215, outside \[0, 10\)"):   # parsed, then out of range
        build_index(_tar(tmp_path / "t.tar", [0], extra=[("top", str(MAX_LABEL).encode())]), num_classes=10)


# -- item 3: a label far beyond the others, without classes.json ---------------------------------------

def test_one_label_of_a_million_among_ten_classes_is_refused_naming_the_fix(tmp_path):
    shard = _tar(tmp_path / "s.tar", list(range(10)) * 3 + [1000000])
    with pytest.raises(DataError, match="bad_label") as e:
        build_index(shard)
    msg = str(e.value)
    print(f"\n{msg}")
    assert "'k30'" in msg and "1000000" in msg and "classes.json" in msg and "1,000,001" in msg
    idx = build_index(shard, bad_labels="mark")
    assert idx.num_classes == 10 and idx.label.tolist() == list(range(10)) * 3 + [-1]
    assert [s["reason"] for s in idx.skipped] == ["bad_label"] and "'k30'" in idx.skipped[0]["detail"]


def test_several_labels_beyond_the_gap_are_all_refused_and_the_class_count_comes_from_the_rest(tmp_path):
    idx = build_index(_tar(tmp_path / "s.tar", [0, 1, 2, 5000, 3, 70000, 5001]), bad_labels="mark")
    assert idx.num_classes == 4 and idx.label.tolist() == [0, 1, 2, -1, 3, -1, -1]


def test_a_classes_json_or_num_classes_states_the_class_count_and_the_label_is_accepted(tmp_path):
    os.makedirs(tmp_path / "d")
    _tar(tmp_path / "d" / "s.tar", list(range(10)) + [5000])
    with pytest.raises(DataError, match="bad_label"):
        build_index(str(tmp_path / "d"))
    assert build_index(str(tmp_path / "d"), num_classes=5001).num_classes == 5001
    (tmp_path / "d" / "classes.json").write_text(json.dumps([f"c{i}" for i in range(5001)]))
    idx = build_index(str(tmp_path / "d"))
    assert idx.num_classes == 5001 and idx.label[-1] == 5000 and not idx.skipped


def test_when_every_label_lies_beyond_the_gap_the_dataset_is_refused_even_when_marking(tmp_path):
    shard = _tar(tmp_path / "s.tar", [1000000, 1000001])
    for mode in ("raise", "mark"):
        with pytest.raises(DataError, match="no smaller label"):
            build_index(shard, bad_labels=mode)


def test_label_sets_of_real_datasets_pass_the_gap_rule():
    rng = np.random.default_rng(0)
    assert labels_beyond_a_gap(np.arange(10)) is None                          # CIFAR-10
    assert labels_beyond_a_gap(np.array([7])) is None                          # one class of ten
    assert labels_beyond_a_gap(np.arange(100)) is None                         # CIFAR-100
    assert labels_beyond_a_gap(np.array([3, 998])) is None                     # two ImageNet-1k classes
    assert labels_beyond_a_gap(np.arange(LABEL_GAP + 1)) is None               # up to 1,024 never refused
    assert labels_beyond_a_gap(rng.permutation(21841)) is None                 # ImageNet-21k
    assert labels_beyond_a_gap(np.arange(0, 20000, 7)) is None                 # evenly spread classes
    assert labels_beyond_a_gap(np.arange(5000, 21841)) is None                 # the upper classes of it
    refused = sum(labels_beyond_a_gap(rng.integers(0, 21841, n)) is not None for n in (20, 50, 100, 200, 500)
                  for _ in range(100))
    assert refused <= 2                                                          # random samples of it
    assert labels_beyond_a_gap(np.r_[np.arange(10), [5000] * 20]) is None       # the labels above are the majority


def test_the_gap_rule_refuses_a_few_labels_far_above_the_bulk():
    assert labels_beyond_a_gap(np.r_[np.arange(10), 1000000]) == (1000000, 9)
    assert labels_beyond_a_gap(np.r_[np.arange(2000), 3500]) is None            # jump 1,501 <= the 2,000 below
    assert labels_beyond_a_gap(np.r_[np.arange(2000), 5000]) == (5000, 1999)    # jump 3,001 > 2,000 and > 1,024
    assert labels_beyond_a_gap(np.array([0, 0, 1000000])) == (1000000, 0)
    assert labels_beyond_a_gap(np.array([1024])) == (1024, -1)                  # 1,025 classes from one label
    assert labels_beyond_a_gap(np.arange(5000, 5051)) == (5000, -1)             # classes 5000-5050 only
    assert labels_beyond_a_gap(np.r_[np.arange(5000, 5051), 10**7]) == (5000, -1)


def test_a_cached_tar_index_from_before_the_label_checks_is_rebuilt(tmp_path, capsys):
    """An index cached by an older vitdata may hold a class count of 1,000,001: it is rebuilt, not trusted."""
    from vitdata.data.index import open_index

    shard = _tar(tmp_path / "s.tar", list(range(10)) + [1000000])
    cache = str(tmp_path / "idx.npz")
    old = build_index(shard, bad_labels="mark")
    old.classes, old.label[-1], old.labels_checked = [str(c) for c in range(1000001)], 1000000, False
    old.save(cache)
    idx = open_index(shard, path=cache, bad_labels="mark")
    assert idx.num_classes == 10 and idx.label[-1] == -1 and idx.labels_checked
    assert "before labels were checked" in capsys.readouterr().err
    assert open_index(shard, path=cache, bad_labels="mark").num_classes == 10     # the rebuilt cache is kept
