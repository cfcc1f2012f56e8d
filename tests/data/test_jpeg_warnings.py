"""JPEGs that libjpeg decodes with a "Corrupt JPEG data" warning are found by the structure walk (no pixel
decoded) and reported as ``corrupt_data``; the corpus is real encoder output, checked against libjpeg itself."""
import subprocess
import sys
import textwrap

import pytest

import jpegwarn
from vitdata.data import selfid
from vitdata.data.checks import check_bytes
from vitdata.errors import REASONS, WARNINGS

LIBJPEG = textwrap.dedent("""
    import os, sys, warnings
    import torch
    warnings.simplefilter("ignore")
    from torchvision.io import decode_jpeg
    for path in sys.argv[1:]:
        os.write(2, f"== {os.path.basename(path)}\\n".encode())   # libjpeg writes on fd 2 too: one stream, in order
        decode_jpeg(torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8))
""")


@pytest.mark.heavy
def test_the_corpus_makes_libjpeg_warn(tmp_path):
    """Each kind is checked against libjpeg itself (torchvision's build prints its warnings on stderr)."""
    kinds = jpegwarn.KINDS + jpegwarn.UNSEEN[:1] + ("clean",)
    paths = []
    for kind in kinds:
        paths.append(tmp_path / f"{kind}.jpg")
        paths[-1].write_bytes(selfid.encode(selfid.make_image(5, 1, 48)) if kind == "clean" else jpegwarn.make(kind, 5, 1))
    run = subprocess.run([sys.executable, "-P", "-c", LIBJPEG, *map(str, paths)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    said = dict(part.split("\n", 1) for part in run.stderr.split("== ")[1:])
    for kind in kinds:
        assert ("Corrupt JPEG data" in said[f"{kind}.jpg"]) == (kind != "clean"), (kind, said)


@pytest.mark.parametrize("kind", jpegwarn.KINDS)
def test_a_file_libjpeg_warns_about_is_corrupt_data_with_libjpegs_words(kind):
    data = jpegwarn.make(kind, 5, 1)
    out, reason, detail = check_bytes(data, 64_000_000)
    assert out == data and reason == "corrupt_data" and reason in REASONS and reason in WARNINGS
    words = {"false_eoi": "premature end of data segment", "restart_cut": "premature end of data segment",
             "restart_order": "found marker 0xd5 instead of RST2"}[kind]
    assert "Corrupt JPEG data" in detail and words in detail


def test_clean_jpegs_of_every_kind_the_encoders_write_are_not_flagged(imagenet_samples):
    import io

    from PIL import Image

    img = Image.fromarray(selfid.make_image(3, 1, 64))
    for kw in ({}, {"progressive": True}, {"restart_marker_blocks": 1}, {"restart_marker_rows": 1},
               {"subsampling": 0}, {"quality": 20}):
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        assert check_bytes(buf.getvalue(), 64_000_000)[1:] == (None, ""), kw
    # real photos, with data after their end marker too (thumbnails, padding)
    for p in sorted(imagenet_samples.rglob("*.JPEG"))[:120]:
        data = p.read_bytes()
        assert check_bytes(data, 64_000_000)[1] is None, p
        assert check_bytes(data + b"\0" * 100, 64_000_000)[1] is None, p
        assert check_bytes(data + data, 64_000_000)[1] is None, p          # a second image appended (MPO)


def test_what_the_walk_cannot_see_is_documented_not_flagged():
    """A scan cut and closed with EOI in a file without restart markers, and bytes after the last MCU, need a
    Huffman decode: the walk passes them (the limit is stated in vitdata.data.jpegwalk)."""
    for kind in jpegwarn.UNSEEN:
        assert check_bytes(jpegwarn.make(kind, 5, 1), 64_000_000)[1] is None
