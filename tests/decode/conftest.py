"""Photo-like JPEGs made here: a smooth random field with fine noise and hard edges, so a window shifted by a
few pixels or resampled differently shows up in a mean absolute difference."""
import io

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0, quality: int = 90, subsampling: int = 2) -> bytes:
    """A (height, width) RGB JPEG (``subsampling`` 2: 4:2:0, 0: 4:4:4)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float64)
    yy, xx = np.mgrid[:height, :width]
    edges = 60.0 * (((xx // 37) + (yy // 29)) % 2)[..., None]   # a checker of hard edges
    img = np.clip(base + edges + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()
