"""Photo-like JPEGs (``photos.photo_image``)."""
import io

from photos import photo_image


def photo(width: int, height: int, seed: int = 0, quality: int = 90, subsampling: int = 2) -> bytes:
    """A (height, width) RGB JPEG (``subsampling`` 2: 4:2:0, 0: 4:4:4)."""
    img = photo_image(width, height, seed)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()
