import numpy as np
import pytest

from core.errors import SlicewiseError, VolumeError
from core.volume import Volume


def test_volume_defaults_and_slice_ids():
    vol = Volume(np.zeros((3, 4, 5), np.int16), spacing=(2.5, 0.7, 0.7), modality="CT", volume_id="v1")
    assert vol.array.dtype == np.float32 and vol.shape == (3, 4, 5)
    assert vol.slice_ids == ["v1#0", "v1#1", "v1#2"]
    assert vol.spacing == (2.5, 0.7, 0.7)


def test_2d_image_is_one_slice():
    vol = Volume(np.ones((4, 5)), modality="CR")
    assert vol.shape == (1, 4, 5) and vol.is_2d


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros((2, 2, 2, 2))}, "shape"),
        ({"array": np.array([["a"]])}, "numeric"),
        ({"array": np.full((2, 2), np.nan)}, "finite"),
        ({"array": np.zeros((2, 2)), "spacing": (1, 0, 1)}, "positive"),
        ({"array": np.zeros((2, 2)), "spacing": (1, 1)}, "three"),
        ({"array": np.zeros((2, 2)), "modality": "PET"}, "modality"),
        ({"array": np.zeros((2, 2, 2)), "slice_ids": ["a"]}, "slice ids"),
    ],
)
def test_invalid_volumes_raise_named_errors(kwargs, match):
    with pytest.raises(VolumeError, match=match) as info:
        Volume(**kwargs)
    assert isinstance(info.value, SlicewiseError)
