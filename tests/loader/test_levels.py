"""LoaderConfig.decode_levels through both backends: the same samples, windows, skips and quarantine as
without levels, pixels within the stated tolerance, the photo's own decode for files without a level, and
a clear refusal of a folder that holds no store of the dataset."""
import json
import os

import pytest
import torch
from loader_runs import assert_source_workers_match
from photos import bad_component, encoded, photo_image

from vitdata import LoaderConfig, create_loader
from vitdata.cli import main as cli
from vitdata.data.index import open_index
from vitdata.decode.levels import Levels, store_dir
from vitdata.errors import ConfigError
from vitdata.loader.config import AugmentConfig

MEAN_TOL = 2.0   # 0..255 scale; see tests/decode/test_levels.py
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """14 photo-like 320x240 JPEGs in 2 classes, a grayscale JPEG and a PNG (no level), two bad JPEGs, and
    the store built by ``vitdata levels``."""
    tmp = tmp_path_factory.mktemp("levels")
    root = tmp / "train"
    files = {f"c{k % 2}/ph{k:02d}.jpg": encoded(photo_image(320, 240, k), quality=90) for k in range(14)}
    im = photo_image(320, 240, 99)
    files.update({"c0/gray.jpg": encoded(im.convert("L")), "c1/png.png": encoded(im, "PNG"),
                  "c0/cut.jpg": encoded(photo_image(320, 240, 51))[:9000],
                  "c1/badcomp.jpg": bad_component(encoded(photo_image(320, 240, 50)))})
    for rel, blob in files.items():
        os.makedirs(root / os.path.dirname(rel), exist_ok=True)
        (root / rel).write_bytes(blob)
    return str(root), str(tmp / "levels")


@pytest.fixture(scope="module")
def built(photos):
    data, levels = photos
    assert cli(["levels", "--data", data, "--out", levels, "--workers", "1"]) == 0
    return data, levels


def _run(data, backend, levels, size=24, epochs=2):
    cfg = LoaderConfig(data=data, batch_size=4, image_size=size, backend=backend, num_workers=0, num_threads=2,
                       seed=5, decode_scale="off", decode_levels=levels,
                       augment=AugmentConfig(randaug=False, hflip=0.0, patch_size=1))
    loader = create_loader(cfg)
    out, skipped = [], []
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            out += [(b.images * STD, b.ids.clone()) for b in loader]
            skipped += sorted((epoch, r["id"], r["reason"]) for r in loader.skipped(epoch))
        names = {i: os.path.basename(loader.index.path(i)) for i in range(len(loader.index))}
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]), skipped, \
            sorted(loader.quarantine.ids()), names
    finally:
        loader.close()


def test_the_cli_builds_a_store_of_the_datasets_plain_jpegs_only(built, capsys):
    data, levels = built
    idx = open_index(data)
    store = Levels(store_dir(levels, idx.fingerprint), idx.fingerprint, len(idx))
    names = [os.path.basename(idx.path(i)) for i in range(len(idx))]
    with_level = {n for i, n in enumerate(names) if store.sizes[2][i, 0] > 0}
    assert with_level == {n for n in names if n.startswith("ph")}     # not the gray, PNG, cut or bad files
    assert cli(["levels", "--data", data, "--out", levels]) == 0      # built already: found, not rebuilt
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["store"] == store.path


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_levels_change_pixels_within_the_tolerance_never_samples_skips_or_quarantine(built, backend):
    data, levels = built
    on, off = _run(data, backend, levels), _run(data, backend, None)
    assert torch.equal(on[1], off[1]) and on[2] == off[2] and on[3] == off[3]
    reasons = {on[4][i]: r for _, i, r in on[2]}
    assert reasons == {"cut.jpg": "truncated", "badcomp.jpg": "decode_error"}
    per = (on[0] - off[0]).abs().mean(dim=(1, 2, 3))
    plain = torch.tensor([on[4][int(i)].startswith("ph") for i in on[1]])
    assert per[plain].mean() <= MEAN_TOL and per[plain].max() <= 12.0
    assert per[plain].mean() > 0.05              # the plain JPEGs really were read from their levels
    assert per[~plain].max() == 0                # grayscale, PNG: the photo's own decode


def test_a_step_whose_windows_are_too_small_for_a_level_decodes_the_photos(built):
    data, levels = built
    on, off = _run(data, "dali", levels, size=200, epochs=1)[0], _run(data, "dali", None, size=200, epochs=1)[0]
    assert torch.equal(on, off)


def test_dali_source_workers_read_the_same_levels_as_the_in_thread_source(built):
    data, levels = built
    assert_source_workers_match(data, batch_size=4, image_size=24, decode_levels=levels)


def test_a_folder_without_this_datasets_store_is_refused_naming_the_command(built, tmp_path):
    data, levels = built
    with pytest.raises(ConfigError, match=r"no levels store of this dataset.*vitdata levels --data") as e:
        create_loader(LoaderConfig(data=data, batch_size=4, image_size=24, decode_levels=str(tmp_path)))
    assert e.value.fields == ("decode_levels",)
    with pytest.raises(ConfigError, match="folder path or None"):
        create_loader(LoaderConfig(data=data, batch_size=4, image_size=24, decode_levels=""))
