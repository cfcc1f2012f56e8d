"""Self-identifying images: pixels encode the sample id, so a test can prove which sample arrived where.

The id is written in base 4 into a 2 x 4 grid of flat cells of the red channel (levels 32 + 64 d), the
label into the green channel the same way (2 x 2 cells), and blue is a constant 128. Flat cells survive
JPEG at quality >= 90, any resize, flips (decode with ``flipped=True``) and per-channel normalisation
(undo it first), but not crops: tests that decode ids use a full-image view.
"""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

ID_CELLS = (2, 4)      # rows x cols of base-4 digits for the id: 4**8 = 65,536 ids
LABEL_CELLS = (2, 2)   # 4**4 = 256 labels
MAX_ID = 4 ** (ID_CELLS[0] * ID_CELLS[1])


def _digits(value: int, n: int) -> list[int]:
    return [(value >> (2 * k)) & 3 for k in range(n)]


def _paint(channel: np.ndarray, value: int, cells: tuple[int, int]) -> None:
    h, w = channel.shape
    rows, cols = cells
    for k, d in enumerate(_digits(value, rows * cols)):
        r, c = divmod(k, cols)
        channel[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols] = 32 + 64 * d


def make_image(sample_id: int, label: int = 0, size: int | tuple[int, int] = 32) -> np.ndarray:
    """(H, W, 3) uint8 image encoding ``sample_id`` (< 65,536) and ``label`` (< 256)."""
    if not 0 <= sample_id < MAX_ID or not 0 <= label < 256:
        raise ValueError(f"sample_id must be in [0, {MAX_ID}) and label in [0, 256)")
    h, w = (size, size) if isinstance(size, int) else size
    img = np.full((h, w, 3), 128, np.uint8)
    _paint(img[..., 0], sample_id, ID_CELLS)
    _paint(img[..., 1], label, LABEL_CELLS)
    return img


def _read(channel: np.ndarray, cells: tuple[int, int]) -> int:
    h, w = channel.shape
    rows, cols = cells
    value = 0
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        y0, y1 = r * h // rows, (r + 1) * h // rows
        x0, x1 = c * w // cols, (c + 1) * w // cols
        cy, cx, my, mx = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (y1 - y0) // 4), max(1, (x1 - x0) // 4)
        mean = float(channel[cy - my:cy + my, cx - mx:cx + mx].mean())
        value |= int(np.clip(round((mean - 32) / 64), 0, 3)) << (2 * k)
    return value


def decode(img: np.ndarray, *, flipped: bool = False, chw: bool = False) -> tuple[int, int]:
    """(sample_id, label) from an image in 0..255 scale, HWC (or CHW with ``chw=True``), any size."""
    img = np.asarray(img, dtype=np.float32)
    if chw:
        img = img.transpose(1, 2, 0)
    if flipped:
        img = img[:, ::-1]
    return _read(img[..., 0], ID_CELLS), _read(img[..., 1], LABEL_CELLS)


def encode(img: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(img).save(buf, format=fmt.upper())
    return buf.getvalue()


def write_imagefolder(root: str, num_samples: int, num_classes: int = 4, size: int = 32, fmt: str = "jpeg") -> list[int]:
    """ROOT/class_XX/img_ID.{jpg,png}; returns the label of each id. Index order (classes sorted, then
    file names sorted) differs from id order, so tests must decode ids from pixels, not assume them."""
    ext = "jpg" if fmt == "jpeg" else fmt
    labels = [i % num_classes for i in range(num_samples)]
    for c in range(num_classes):
        os.makedirs(os.path.join(root, f"class_{c:02d}"), exist_ok=True)
    for i, y in enumerate(labels):
        with open(os.path.join(root, f"class_{y:02d}", f"img_{i:06d}.{ext}"), "wb") as f:
            f.write(encode(make_image(i, y, size), fmt))
    return labels


def write_shards(directory: str, num_samples: int, num_classes: int = 4, size: int = 32, per_shard: int = 100,
                 fmt: str = "jpeg", prefix: str = "train") -> list[str]:
    """WebDataset shards PREFIX-NNNNNN.tar with KEY.jpg + KEY.cls (ASCII label); sample i is key f"{i:08d}"
    in order, so index position == id. Returns the shard paths."""
    os.makedirs(directory, exist_ok=True)
    ext = "jpg" if fmt == "jpeg" else fmt
    paths = []
    for s, start in enumerate(range(0, num_samples, per_shard)):
        path = os.path.join(directory, f"{prefix}-{s:06d}.tar")
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(start, min(start + per_shard, num_samples)):
                y = i % num_classes
                for name, data in ((f"{i:08d}.{ext}", encode(make_image(i, y, size), fmt)),
                                   (f"{i:08d}.cls", str(y).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tf.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths
