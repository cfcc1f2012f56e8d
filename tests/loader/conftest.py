"""Tiny self-identifying datasets for the loader tests (32 px ImageFolder trees, built once per session)."""
import os
import re

import numpy as np
import pytest

from vitdata.data import selfid

MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1) * 255
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1) * 255


@pytest.fixture(scope="session", autouse=True)
def _index_cache(tmp_path_factory):
    old = os.environ.get("VITDATA_CACHE")
    os.environ["VITDATA_CACHE"] = str(tmp_path_factory.mktemp("index-cache"))
    yield
    if old is None:
        os.environ.pop("VITDATA_CACHE", None)
    else:
        os.environ["VITDATA_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """64 images, 4 classes, 32x32 JPEG."""
    root = tmp_path_factory.mktemp("tiny") / "train"
    selfid.write_imagefolder(str(root), 64, num_classes=4, size=32)
    return str(root)


def pixel_ids(index) -> np.ndarray:
    """Index position -> the id painted into the pixels (ImageFolder order differs from id order)."""
    return np.array([int(re.search(r"img_(\d+)", index.path(i)).group(1)) for i in range(len(index))])


def decode_batch(images, flipped=False) -> list[tuple[int, int]]:
    """(pixel id, pixel label) of each normalised (B,3,H,W) image."""
    x = images.float().cpu().numpy() * STD + MEAN
    return [selfid.decode(img, chw=True, flipped=flipped) for img in x]
