"""The RandAugment suite calls DALI's regular operators, not the deprecated experimental aliases."""
from vitdata.pipelines import randaug


def test_the_randaugment_suite_uses_no_experimental_operator():
    for device in ("cpu", "gpu"):
        names = {op.name: op for op in randaug.suite(device=device)}
        assert names["equalize"]._op is randaug._equalize and names["sharpness"]._op is randaug._sharpness

