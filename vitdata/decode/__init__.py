"""Turning a sample's encoded bytes into the pixels a step needs.

Owns the colour policy every Pillow decode follows (:func:`.pillow.decode_rgb`: EXIF orientation applied,
every mode to 8-bit RGB), the random-resized-crop window drawn in source coordinates before anything is
decoded (:mod:`.crop`), and decoding a JPEG at the scale the step needs (:mod:`.scaled`: libjpeg-turbo's
DCT-domain scaling by 1/2, 1/4 or 1/8 where the window is large enough next to the output side; :mod:`.levels`:
the photo stored once more at 1/2, 1/4 and 1/8, so a small step also entropy-decodes a small file).

Both backends use it: the torch backend decodes here, the DALI graph's source draws its windows here and,
on a CPU-only host, decodes the reduced JPEGs here too (DALI 2.4's decoders have no scaled decode).

May import: ``vitdata.errors``. Knows nothing of DALI, torch, the sampler or losses; depends on NumPy and
Pillow only.
"""
from vitdata.decode.crop import CropBox, crop_rng, sample_crop_box
from vitdata.decode.pillow import decode_rgb
from vitdata.decode.scaled import REDUCTIONS, Header, decode_region, open_scaled, probe, reduction_factor, scaled_box

__all__ = ["CropBox", "crop_rng", "sample_crop_box", "decode_rgb", "REDUCTIONS", "Header", "decode_region",
           "open_scaled", "probe", "reduction_factor", "scaled_box"]
