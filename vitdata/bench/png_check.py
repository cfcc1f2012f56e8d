"""``vitdata bench png-check``: what does the PNG data check (``vitdata.data.pngdata``) cost per file, against
decoding the file, on the same PNGs in one process?

Routes (CPU ms per file, one thread, fastest of ``--repeats``):

=============  ===============================================================================================
walk           the sample checks without the image data (``check_bytes(png_data=False)``: chunk walk, CRCs),
               what every PNG paid before the check
check-first    the sample checks with the image data, on files this process has not seen: epoch 0
check-again    the same on files found sound before (remembered by their IDAT CRCs): every later epoch
pillow         Pillow's full decode to RGB (the torch backend's decode)
dali           DALI's CPU decoder on the batch of files, one thread (the DALI backend's decode)
=============  ===============================================================================================

The figures: the check's added cost per file (check-first - walk, check-again - walk) and that cost against
each decoder's. Data: ``--data`` (an ImageFolder of photos, each converted to PNG in memory: photos are what
PNG's deflate meets in training sets), else generated self-identifying images.

    python -P -m vitdata bench png-check [--data ../shared/data/imagenet-samples] [--images 200]
        [--repeats 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import io
import os
import time

from vitdata.bench import record

from .common import load_avg, quiet_dali, scratch_dir

ROUTES = ("walk", "check-first", "check-again", "pillow", "dali")


def _pngs(data: str | None, images: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    from vitdata.data import selfid

    if data is None:
        return [selfid.encode(selfid.make_image(i, i % 4, 224), "png") for i in range(images)]
    from vitdata.data.index import open_index
    from vitdata.data.reader import SampleReader

    with scratch_dir():   # the index built here never lands in the user's cache
        idx = open_index(data)
        reader = SampleReader(idx)
        out = []
        for i in range(min(images, len(idx))):
            with Image.open(io.BytesIO(reader.read(i))) as im:
                buf = io.BytesIO()
                Image.fromarray(np.asarray(im.convert("RGB"))).save(buf, "PNG")
                out.append(buf.getvalue())
    return out


def measure(pngs: list[bytes], repeats: int) -> dict:
    """CPU ms per file of each route of :data:`ROUTES` over ``pngs``."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    from vitdata.data import pngdata
    from vitdata.data.checks import check_bytes

    n = len(pngs)

    def best(fn_, before=None) -> float:
        times = []
        for _ in range(repeats):
            if before:
                before()
            t0 = time.process_time()
            fn_()
            times.append(time.process_time() - t0)
        return 1000.0 * min(times) / n

    def checks(png_data: bool):
        for d in pngs:
            if check_bytes(d, 1 << 40, png_data=png_data)[1] is not None:
                raise RuntimeError("a generated PNG failed the sample checks")

    def pillow():
        for d in pngs:
            with Image.open(io.BytesIO(d)) as im:
                im.convert("RGB").load()

    @pipeline_def(batch_size=n, num_threads=1, device_id=None, prefetch_queue_depth=1, exec_async=False,
                  exec_pipelined=False)
    def decode():
        encoded = fn.external_source(source=lambda: [np.frombuffer(d, np.uint8) for d in pngs], batch=True,
                                     dtype=types.UINT8, ndim=1)
        return fn.decoders.image(encoded, device="cpu", output_type=types.RGB)

    pipe = decode()
    pipe.build()
    pipe.run()   # warm-up: allocations and the decoder's first call are not the route's cost
    forget = pngdata._sound.clear
    out = {"walk": best(lambda: checks(False)),
           "check-first": best(lambda: checks(True), before=forget),
           "check-again": best(lambda: checks(True)),
           "pillow": best(pillow),
           "dali": best(pipe.run)}
    forget()
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="ImageFolder root of photos (converted to PNG in memory); "
                                                "default: generated 224 px images")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-note", default=None, help="how the data was obtained (recorded)")
    p.add_argument("--json", help="record file or directory")
    a = p.parse_args(argv)
    pngs = _pngs(a.data, a.images)
    settings = {"data": os.path.abspath(a.data) if a.data else "generated 224 px self-identifying images",
                "images": len(pngs), "mean_png_kb": sum(map(len, pngs)) / len(pngs) / 1e3, "repeats": a.repeats,
                "threads": 1, "clock": "process CPU time", "load_avg_1m_start": load_avg()}
    if a.data_note:
        settings["data_note"] = a.data_note
    with quiet_dali():
        r = measure(pngs, a.repeats)
    settings["load_avg_1m_end"] = load_avg()
    added = {"epoch_0_ms": r["check-first"] - r["walk"], "later_epochs_ms": r["check-again"] - r["walk"]}
    ratios = {f"{k}_vs_{dec}": v / r[dec] for k, v in added.items() for dec in ("pillow", "dali")}
    print(f"vitdata bench png-check: {settings['data']}, {len(pngs)} PNGs of {settings['mean_png_kb']:.0f} KB, "
          f"CPU ms per file (one thread, best of {a.repeats})")
    print("  " + "  ".join(f"{k} {r[k]:.3f}" for k in ROUTES))
    print(f"  added by the check: epoch 0 {added['epoch_0_ms']:.3f} ms = {ratios['epoch_0_ms_vs_pillow']:.2f}x "
          f"Pillow's decode, {ratios['epoch_0_ms_vs_dali']:.2f}x DALI's; later epochs "
          f"{added['later_epochs_ms']:.3f} ms = {ratios['later_epochs_ms_vs_dali']:.3f}x DALI's")
    data = os.path.basename(os.path.normpath(a.data)) if a.data else "generated images"
    headline = [{"measured": f"PNG data check on {data} as PNG ({settings['mean_png_kb']:.0f} KB), epoch 0: CPU ms "
                             f"per file added to the chunk walk",
                 "figure": f"{added['epoch_0_ms']:.2f} ms",
                 "compared": f"{ratios['epoch_0_ms_vs_dali']:.2f}x DALI's CPU decode ({r['dali']:.2f} ms), "
                             f"{ratios['epoch_0_ms_vs_pillow']:.2f}x Pillow's ({r['pillow']:.2f} ms)"},
                {"measured": f"PNG data check on {data} as PNG, later epochs (file remembered as sound)",
                 "figure": f"{added['later_epochs_ms']:.3f} ms",
                 "compared": f"{ratios['later_epochs_ms_vs_dali']:.3f}x DALI's CPU decode"}]
    path = record.write_record("png-check", {"settings": settings, "ms_per_file": r, "added_ms": added,
                                             "ratios": ratios, "headline": headline}, a.json)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
