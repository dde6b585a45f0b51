"""The intensity convention: every cloud reaches the network in [0, 1]."""
import numpy as np
import pytest

from nclr_core.data.intensity import IntensityNormalizer, full_scale_of


def _cloud(intensity):
    intensity = np.asarray(intensity, np.float32)
    return np.column_stack((np.ones((len(intensity), 3), np.float32), intensity))


@pytest.mark.parametrize("values, scale", [([0.0, 0.7, 1.0], 1.0), ([0.0, 3.0, 255.0], 255.0),
                                           ([12.0, 4000.0], 65535.0), ([], 1.0)])
def test_full_scale_is_the_smallest_that_holds_the_values(values, scale):
    assert full_scale_of(np.asarray(values)) == scale


def test_impossible_intensities_are_named():
    with pytest.raises(ValueError, match="negative"):
        full_scale_of(np.array([-1.0]))
    with pytest.raises(ValueError, match="exceeds every known full scale"):
        full_scale_of(np.array([1e6]))


def test_detected_scale_only_grows_and_inputs_are_untouched():
    normalize = IntensityNormalizer()
    dark = _cloud([0.2, 0.9])
    assert np.allclose(normalize(dark)[:, 3], [0.2, 0.9]) and normalize.full_scale == 1.0
    bright = _cloud([10.0, 255.0])
    assert np.allclose(normalize(bright)[:, 3], [10 / 255, 1.0])
    assert np.allclose(normalize(dark)[:, 3], [0.2 / 255, 0.9 / 255])  # 255 is kept
    assert bright[1, 3] == 255.0


def test_a_given_full_scale_is_used_as_is():
    normalize = IntensityNormalizer(100.0)
    assert np.allclose(normalize(_cloud([50.0, 0.5]))[:, 3], [0.5, 0.005])
    with pytest.raises(ValueError, match="positive"):
        IntensityNormalizer(0.0)
