"""ImageFolder trees: symbolic links followed once per real file, never into a loop or out of a class folder;
one class list for every split of a dataset (the training split's, or classes.json)."""
import json
import os

import numpy as np
import pytest

from vitdata.data import selfid
from vitdata.data.index import build_index, class_list, open_index
from vitdata.errors import DataError


def _tree(root, counts: dict[str, int], start: int = 0) -> int:
    """Class folders with self-identifying JPEGs: {class name: files}; returns the next free id."""
    gid = start
    for y, (name, n) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for _ in range(n):
            with open(os.path.join(root, name, f"img_{gid:06d}.jpg"), "wb") as f:
                f.write(selfid.encode(selfid.make_image(gid, y, 16)))
            gid += 1
    return gid


def _by_class(idx) -> dict[str, list[str]]:
    out = {}
    for i in range(len(idx)):
        out.setdefault(idx.classes[idx.label[i]], []).append(os.path.basename(idx.path(i)))
    return {k: sorted(v) for k, v in out.items()}


def _reasons(idx) -> list[tuple[str, str]]:
    return sorted((s["reason"], os.path.basename(s["path"])) for s in idx.skipped)


# -- symbolic links ----------------------------------------------------------------------------------------------

def test_a_link_loop_in_a_class_folder_does_not_multiply_its_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITDATA_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "train"
    _tree(root, {"c0": 11, "c1": 4})
    os.symlink(".", root / "c0" / "self")
    os.makedirs(root / "c1" / "sub")
    os.symlink("..", root / "c1" / "sub" / "back")     # a loop one level down
    idx = open_index(str(root))
    assert len(idx) == 15 and len(set(idx.sources)) == 15
    assert {k: len(v) for k, v in _by_class(idx).items()} == {"c0": 11, "c1": 4}
    assert _reasons(idx) == [("symlink_loop", "back"), ("symlink_loop", "self")]
    assert "2 symlink_loop" in capsys.readouterr().err


def test_a_chain_of_links_back_to_itself_is_a_counted_loop_and_a_broken_link_is_named(tmp_path):
    root = tmp_path / "train"
    _tree(root, {"c0": 3, "c1": 2})
    os.symlink("b.jpg", root / "c0" / "a.jpg")          # a file-named chain: a -> b -> a
    os.symlink("a.jpg", root / "c0" / "b.jpg")
    os.symlink("dir_b", root / "c1" / "dir_a")          # a folder-named one
    os.symlink("dir_a", root / "c1" / "dir_b")
    idx = build_index(str(root))
    assert {k: len(v) for k, v in _by_class(idx).items()} == {"c0": 3, "c1": 2}
    assert _reasons(idx) == [("symlink_loop", "a.jpg"), ("symlink_loop", "b.jpg"), ("symlink_loop", "dir_a"),
                             ("symlink_loop", "dir_b")]
    os.symlink(str(tmp_path / "gone.jpg"), root / "c1" / "dead.jpg")
    with pytest.raises(DataError, match=r"dead\.jpg.*broken link"):
        build_index(str(root))


def test_a_link_out_of_its_class_folder_never_labels_other_classes_files(tmp_path):
    root = tmp_path / "train"
    _tree(root, {"c0": 3, "c1": 5, "c2": 2})
    os.symlink("..", root / "c0" / "up")
    os.symlink(os.path.join("..", "c2"), root / "c1" / "other")
    idx = build_index(str(root))
    assert {k: len(v) for k, v in _by_class(idx).items()} == {"c0": 3, "c1": 5, "c2": 2}
    for i in range(len(idx)):   # every file has its own folder's label
        assert idx.classes[idx.label[i]] == os.path.basename(os.path.dirname(os.path.realpath(idx.path(i))))
    assert _reasons(idx) == [("symlink_outside", "other"), ("symlink_outside", "up")]
    assert all(os.path.join("c0", "up") in s["path"] or "other" in s["path"] for s in idx.skipped)


def test_file_links_are_followed_once_per_real_file(tmp_path):
    """A subset made of links into a full dataset indexes each linked file once, with the label of the folder
    holding the link; a second route to a file already indexed (here or in another class) is counted."""
    full = tmp_path / "full"
    _tree(full, {"a": 3, "b": 3})
    subset = tmp_path / "subset"
    for c in ("a", "b"):
        os.makedirs(subset / c)
    os.symlink(full / "a" / "img_000000.jpg", subset / "a" / "x.jpg")
    os.symlink(full / "a" / "img_000001.jpg", subset / "a" / "y.jpg")
    os.symlink(full / "a" / "img_000001.jpg", subset / "a" / "y_again.jpg")      # the same file twice
    os.symlink(full / "b" / "img_000003.jpg", subset / "b" / "z.jpg")
    idx = build_index(str(subset))
    assert _by_class(idx) == {"a": ["x.jpg", "y.jpg"], "b": ["z.jpg"]}
    assert _reasons(idx) == [("duplicate_file", "y_again.jpg")]
    # a link in one class to a file that lives in another: the file keeps its own folder's label
    os.symlink(full / "b" / "img_000004.jpg", full / "a" / "stolen.jpg")
    idx = build_index(str(full))
    assert _by_class(idx) == {"a": [f"img_{i:06d}.jpg" for i in range(3)], "b": [f"img_{i:06d}.jpg" for i in range(3, 6)]}
    assert _reasons(idx) == [("duplicate_file", "stolen.jpg")]


def test_a_class_folder_that_is_a_link_is_that_classes_tree(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _tree(elsewhere, {"cats": 4}, start=100)
    root = tmp_path / "train"
    _tree(root, {"dogs": 2})
    os.symlink(elsewhere / "cats", root / "cats")
    os.symlink(root / "dogs", root / "dogs_alias")     # a second route to one folder: counted, not doubled
    idx = build_index(str(root))
    assert idx.classes == ["cats", "dogs", "dogs_alias"]
    assert {k: len(v) for k, v in _by_class(idx).items()} == {"cats": 4, "dogs": 2}
    assert _reasons(idx) == [("symlink_loop", "dogs_alias")]


# -- one class list per dataset -----------------------------------------------------------------------------------

def test_a_flat_split_without_class_folders_is_refused_saying_what_to_do(tmp_path):
    root = tmp_path / "val"
    os.makedirs(root)
    for i in range(3):
        (root / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(selfid.encode(selfid.make_image(i, 0, 16)))
    with pytest.raises(DataError, match=r"no class directories.*holds 3 image files directly.*valprep"):
        build_index(str(root))


def test_a_val_split_missing_a_class_keeps_the_training_splits_label_ids(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    _tree(train, {"a": 2, "b": 2, "c": 2})
    _tree(val, {"a": 2, "c": 3}, start=50)
    alone = build_index(str(val))
    assert alone.classes == ["a", "c"]              # on its own, c would be label 1: shifted
    idx = build_index(str(val), classes=class_list(str(train)))
    assert idx.classes == ["a", "b", "c"]
    assert sorted(idx.label.tolist()) == [0, 0, 2, 2, 2]
    for i in range(len(idx)):
        assert idx.classes[idx.label[i]] == os.path.basename(os.path.dirname(idx.path(i)))


def test_a_val_split_with_a_class_the_training_split_lacks_is_refused_naming_the_folder(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    _tree(train, {"a": 2, "b": 2})
    _tree(val, {"a": 1, "b": 1, "zebra": 1}, start=50)
    with pytest.raises(DataError, match="bad_label") as e:
        build_index(str(val), classes=class_list(str(train)))
    assert os.path.join("val", "zebra") in str(e.value) and "training split" in str(e.value)


def test_a_classes_json_in_the_root_is_the_class_list_of_every_split(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    _tree(train, {"b": 2, "a": 2})
    (train / "classes.json").write_text(json.dumps(["b", "a", "c"]))
    assert class_list(str(train)) == ["b", "a", "c"]
    idx = build_index(str(train))
    assert idx.classes == ["b", "a", "c"] and _by_class(idx) == {
        "a": ["img_000002.jpg", "img_000003.jpg"], "b": ["img_000000.jpg", "img_000001.jpg"]}
    _tree(val, {"c": 1}, start=9)
    assert build_index(str(val), classes=class_list(str(train))).label.tolist() == [2]
    (val / "classes.json").write_text(json.dumps(["a", "b", "c"]))     # a split that disagrees
    with pytest.raises(DataError, match="classes.json"):
        build_index(str(val), classes=class_list(str(train)))
    (train / "classes.json").write_text(json.dumps(["b"]))
    with pytest.raises(DataError, match=r"'a' is not in"):
        build_index(str(train))


def test_shard_splits_share_the_training_splits_class_count(tmp_path):
    """A label a tar split holds beyond the training split's classes is that sample's bad label, never a
    class the model does not have (an IndexError in the loss after a whole epoch)."""
    selfid.write_shards(str(tmp_path / "train"), 20, num_classes=4, size=16, per_shard=10)
    selfid.write_shards(str(tmp_path / "val"), 12, num_classes=6, size=16, per_shard=12)
    classes = class_list(str(tmp_path / "train"))
    assert len(classes) == 4 and build_index(str(tmp_path / "val")).num_classes == 6
    with pytest.raises(DataError, match="bad_label"):
        build_index(str(tmp_path / "val"), classes=classes)
    idx = build_index(str(tmp_path / "val"), classes=classes, bad_labels="mark")
    assert idx.num_classes == 4 and np.count_nonzero(idx.label == -1) == 4
