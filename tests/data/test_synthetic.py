import hashlib
import io

import numpy as np
from PIL import Image

from vitdata.data import synthetic
from vitdata.data.reader import SampleReader
from vitdata.data.index import build_index


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_generation_is_deterministic_balanced_and_indexable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synthetic.generate(str(a), num_samples=200, num_classes=4, size=32, per_shard=64)
    synthetic.generate(str(b), num_samples=200, num_classes=4, size=32, per_shard=64)
    for shard in sorted((a / "train").glob("*.tar")):
        assert _sha(shard) == _sha(b / "train" / shard.name)
    train, val = build_index(str(a / "train")), build_index(str(a / "val"))
    assert len(train) == 180 and len(val) == 20 and train.num_classes == 4
    counts = np.bincount(np.concatenate([train.label, val.label]), minlength=4)
    assert counts.tolist() == [50] * 4
    img = Image.open(io.BytesIO(SampleReader(train).read(0)))
    assert img.size == (32, 32) and img.format == "JPEG"


def test_existing_identical_dataset_is_reused(tmp_path):
    synthetic.generate(str(tmp_path), num_samples=40, num_classes=2, size=16)
    mtime = (tmp_path / "train" / "train-000000.tar").stat().st_mtime_ns
    synthetic.generate(str(tmp_path), num_samples=40, num_classes=2, size=16)
    assert (tmp_path / "train" / "train-000000.tar").stat().st_mtime_ns == mtime


def test_classes_differ_in_low_and_in_high_frequencies():
    size = 64
    imgs = {c: [synthetic.draw(i, c, 10, size, 0) for i in range(24)] for c in range(10)}
    # same shape pairs (0, 1) differ mostly by texture: class 1's grating is finer
    assert synthetic.class_spec(0, 10)["shape"] == synthetic.class_spec(1, 10)["shape"]
    assert synthetic.class_spec(1, 10)["freq"] > synthetic.class_spec(0, 10)["freq"] + 5
    # low frequency: mean colour inside the image separates classes of different shape/hue
    means = {c: np.mean([im.reshape(-1, 3).mean(0) for im in v], 0) for c, v in imgs.items()}
    assert np.linalg.norm(means[0] - means[2]) > 10
    # a nearest-class-mean classifier on 8x8 low-passed images beats chance clearly (shape + colour)
    def low(im):
        return np.asarray(Image.fromarray(im).resize((8, 8), Image.BILINEAR), np.float32).ravel()
    protos = {c: np.mean([low(im) for im in v[:16]], 0) for c, v in imgs.items()}
    correct = sum(min(protos, key=lambda k: np.linalg.norm(low(im) - protos[k])) == c
                  for c, v in imgs.items() for im in v[16:])
    assert correct / 80 > 0.3  # chance is 0.1
