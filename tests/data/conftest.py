"""Fixtures of the data tests."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def dali_decode():
    """Decode one file in a one-sample DALI CPU pipeline and return its RGB pixels; raises when the decoder
    refuses it (the header and PNG-data rules are checked against it)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def one():
        return fn.decoders.image(fn.external_source(name="encoded", dtype=types.UINT8, ndim=1), device="cpu",
                                 output_type=types.RGB)

    pipe = one()
    pipe.build()

    def decode(data: bytes) -> np.ndarray:
        pipe.feed_input("encoded", [np.frombuffer(data, np.uint8)])
        return np.array(pipe.run()[0].at(0))

    return decode
