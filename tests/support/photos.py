"""Real photos as test input (``tests/kernels``): centre crops of an ImageFolder's first photos."""
from pathlib import Path

import numpy as np
from PIL import Image


def center_crops(root: Path, count: int = 3, size: int = 224) -> np.ndarray:
    """(count, 3, size, size) uint8: the first ``count`` photos under ``root`` (ImageFolder), each resized
    (bicubic) so its short side is ``size`` and centre-cropped to a square."""
    files = sorted(root.glob("*/*.JPEG"))[:count]
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            s = size / min(im.size)
            im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BICUBIC)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            out.append(np.asarray(im.crop((left, top, left + size, top + size))).transpose(2, 0, 1))
    return np.stack(out)
