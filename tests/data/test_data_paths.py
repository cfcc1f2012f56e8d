"""Data-path mistakes get a one-line DataError that says what to pass."""
import pytest

from vitdata import DataError, build_index
from vitdata.data import selfid


def test_a_dataset_root_holding_train_and_val_is_named_as_such(tmp_path):
    selfid.write_imagefolder(str(tmp_path / "train"), 8, num_classes=2, size=16)
    selfid.write_imagefolder(str(tmp_path / "val"), 4, num_classes=2, size=16)
    with pytest.raises(DataError, match=r"looks like a dataset root.*pass .*train as the data.*val as eval.data"):
        build_index(str(tmp_path))


def test_a_plain_file_as_the_dataset_is_a_data_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match=r"a file, not a dataset"):
        build_index(str(f))
