"""docs/reliability.md A1: an ``on_error="raise"`` error keeps the checker's detail. The README promises
``[unsupported_format] sample 17: /data/train/cls/x.jpg: format GIF (vitdata reads JPEG and PNG)``;
the message used to end at ``eval epoch 0 step 0 rank 0``."""
import pytest

from vitdata import DataError, LoaderConfig, create_loader

import badinputs
from .conftest import FULL_VIEW


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_a_raised_data_error_carries_the_checkers_detail(tmp_path, backend):
    m = badinputs.write_imagefolder_mixed(str(tmp_path / "val"), 14, kinds=[15], size=16)   # 15: a GIF named .jpg
    ld = create_loader(LoaderConfig(data=m.root, batch_size=4, image_size=16, backend=backend, num_workers=0,
                                    on_error="raise", augment=FULL_VIEW), split="eval")
    try:
        with pytest.raises(DataError, match="unsupported_format") as e:
            for _ in ld:
                pass
    finally:
        ld.close()
    msg = str(e.value)
    print(f"\n{backend}: {msg}")
    assert "format GIF (vitdata reads JPEG and PNG)" in msg
    assert m.bad[15] in msg
