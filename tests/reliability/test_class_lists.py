"""One class list per dataset, checked for every split before training starts: a val split missing a class
keeps the training split's label ids; a val split with a class the training split lacks is refused when its
loader is created (never an IndexError in the loss after a whole epoch)."""
import os
import shutil

import numpy as np
import pytest

from vitdata import ConfigError, LoaderConfig, create_loader
from vitdata.data import selfid

from .conftest import FULL_VIEW

MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1) * 255
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1) * 255


def _cfg(train, val, **kw):
    return LoaderConfig(data=train, batch_size=4, image_size=32, backend="torch", num_workers=0, augment=FULL_VIEW,
                        eval=LoaderConfig().eval.__class__(data=val, crop_pct=1.0), **kw)


def test_a_val_split_missing_a_class_folder_keeps_the_training_label_ids(tmp_path):
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    selfid.write_imagefolder(train, 24, num_classes=4, size=32)
    selfid.write_imagefolder(val, 16, num_classes=4, size=32)
    shutil.rmtree(os.path.join(val, "class_01"))
    ld = create_loader(_cfg(train, val), split="eval")
    try:
        assert ld.index.classes == [f"class_{c:02d}" for c in range(4)]
        n = 0
        for b in ld:
            x = b.images.float().numpy() * STD + MEAN
            painted = [selfid.decode(img, chw=True)[1] for img in x]   # the label each image was made with
            assert b.labels.tolist() == painted
            n += len(painted)
        assert n == 12 and 1 not in ld.index.label
    finally:
        ld.close()


def test_a_val_split_with_a_class_the_training_split_lacks_is_refused_at_creation(tmp_path):
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    selfid.write_imagefolder(train, 12, num_classes=3, size=32)
    selfid.write_imagefolder(val, 16, num_classes=4, size=32)
    with pytest.raises(ConfigError) as e:
        create_loader(_cfg(train, val), split="eval")
    msg = str(e.value)
    assert "eval.data" in msg and os.path.join("val", "class_03") in msg and "bad_label" in msg
    # the training split itself is unaffected, and a split of the same data needs no other list
    create_loader(_cfg(train, train), split="eval").close()
    create_loader(_cfg(train, val)).close()


def test_vitdata_train_refuses_a_val_or_test_split_with_an_extra_class_before_training(tmp_path):
    from vitdata.train.config import TrainConfig
    from vitdata.train.loop import train as run

    root = tmp_path / "data"
    selfid.write_imagefolder(str(root / "train"), 16, num_classes=2, size=32)
    selfid.write_imagefolder(str(root / "val"), 6, num_classes=2, size=32)
    selfid.write_imagefolder(str(root / "test"), 9, num_classes=3, size=32)
    base = dict(data=str(root), backend="torch", workers=0, epochs=1, batch_size=4, image_size=32,
                out=str(tmp_path / "run"))
    with pytest.raises(Exception) as e:
        run(TrainConfig(**base, test=str(root / "test")))
    assert "class_02" in str(e.value) and "bad_label" in str(e.value)
    selfid.write_imagefolder(str(root / "val3"), 9, num_classes=3, size=32)
    with pytest.raises(ConfigError, match="class_02"):
        run(TrainConfig(**dict(base, data=None, train=str(root / "train"), val=str(root / "val3"))))
    assert not os.path.exists(tmp_path / "run" / "checkpoint")
