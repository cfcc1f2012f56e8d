"""The resize filters a config may name: one list, and each backend has a filter for every name in it."""
import pytest

from vitdata.loader.config import INTERPOLATIONS, RANDAUG_INTERPOLATIONS


def test_the_dali_graph_has_a_filter_for_exactly_the_names_a_config_accepts():
    pytest.importorskip("nvidia.dali")
    from vitdata.pipelines import graphs

    assert sorted(graphs._INTERP) == sorted(INTERPOLATIONS)


@pytest.mark.parametrize("name", sorted(set(INTERPOLATIONS) | set(RANDAUG_INTERPOLATIONS)))
def test_the_torch_backend_maps_every_name_to_a_torchvision_mode(name):
    from torchvision.transforms import InterpolationMode

    from vitdata.loader.backends.torch import torchvision_interpolation

    mode = torchvision_interpolation(name)
    assert isinstance(mode, InterpolationMode)
    assert mode.value == ("bilinear" if name == "triangular" else name)
