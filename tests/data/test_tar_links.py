"""docs/reliability.md I9: a tar sample whose image (or label) member is a hard link or a symlink
is that one sample's ``non_regular_member``; before, a hard-linked image killed the whole dataset
(``missing_image``)."""
import io
import tarfile

import pytest

from vitdata.data import selfid
from vitdata.data.reader import SampleReader
from vitdata.data.index import build_index


def _jpg(i):
    return selfid.encode(selfid.make_image(i, 0, 16))


def _shard(path, linked: str, kind):
    """Samples a, b, c; member ``linked`` (e.g. "b.jpg") is a link of type ``kind`` to a's member."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for key, i in (("a", 0), ("b", 1), ("c", 2)):
            for ext, data in (("jpg", _jpg(i)), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                if info.name == linked:
                    info.type, info.linkname = kind, f"a.{ext}"
                    tf.addfile(info)
                else:
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.mark.parametrize("kind", [tarfile.LNKTYPE, tarfile.SYMTYPE], ids=["hard link", "symlink"])
@pytest.mark.parametrize("linked", ["b.jpg", "b.cls", "c.jpg"])
def test_a_linked_member_passes_over_that_sample_only(tmp_path, kind, linked):
    idx = build_index(_shard(tmp_path / "s.tar", linked, kind))
    key = linked.split(".")[0]
    keep = [k for k in "abc" if k != key]
    assert [idx.key(i) for i in range(len(idx))] == keep
    assert [s["reason"] for s in idx.skipped] == ["non_regular_member"]
    assert f"sample {key!r} passed over" in idx.skipped[0]["detail"]
    reader = SampleReader(idx)
    assert [idx.label[i] for i in range(len(idx))] == ["abc".index(k) for k in keep]
    assert all(reader.read(i)[:2] == b"\xff\xd8" for i in range(len(idx)))
