"""PhotometricJitter: each component does what it says, geometry is untouched, the switch."""
import numpy as np
import pytest

from nclr_core.data.config import DataConfig, PhotometricConfig
from nclr_core.data.datasets import pair_transform
from nclr_core.data.transforms import RNG_KEY, PhotometricJitter, RandomCrop, sample_rng

OFF = {"brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "noise_std": 0.0,
       "blur_probability": 0.0}


def _sample(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(120, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    image[:, 30:34] = 250  # a sharp bright bar
    return {"image": image, "points": rng.normal(size=(100, 4)).astype(np.float32),
            "K": np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), "T_cam_lidar": np.eye(4),
            RNG_KEY: sample_rng(seed, 0, 0)}


def _jitter(**settings) -> PhotometricJitter:
    return PhotometricJitter(**{**OFF, **settings})


def test_all_components_off_leave_the_image_as_it_was():
    sample = _sample()
    before = sample["image"].copy()
    assert np.array_equal(_jitter()(sample)["image"], before)


def test_brightness_scales_and_noise_adds_what_was_asked():
    dark = _sample()
    dark["image"] = np.full((48, 64, 3), 100, np.uint8)
    gains = []
    for seed in range(20):
        sample = {**dark, RNG_KEY: sample_rng(seed, 0, 0)}
        gains.append(_jitter(brightness=0.3)(sample)["image"].mean() / 100.0)
    assert 0.7 <= min(gains) < 0.85 and 1.15 < max(gains) <= 1.3
    noisy = _jitter(noise_std=0.05)({**dark, RNG_KEY: sample_rng(1, 0, 0)})["image"]
    assert 0.0 < noisy.astype(float).std() <= 0.05 * 255 * 1.1
    assert abs(noisy.mean() - 100.0) < 1.0


def test_gamma_keeps_black_and_white_and_contrast_keeps_the_mean():
    ramp = _sample()
    ramp["image"] = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (48, 1, 3))
    out = _jitter(gamma=0.5)(ramp)["image"]
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)  # still a monotonic ramp
    sample = _sample(3)
    mean = sample["image"].astype(float).mean()
    stretched = _jitter(contrast=0.5)(sample)["image"].astype(float)
    assert abs(stretched.mean() - mean) < 3.0


def test_blur_softens_edges_and_geometry_is_untouched():
    sample = _sample()
    K, points = sample["K"].copy(), sample["points"].copy()
    sharp = np.abs(np.diff(sample["image"][:, 28:36].astype(int), axis=1)).max()
    out = _jitter(blur_probability=1.0, blur_sigma_px=2.0)(sample)
    assert np.abs(np.diff(out["image"][:, 28:36].astype(int), axis=1)).max() < sharp
    assert np.array_equal(out["K"], K) and np.array_equal(out["points"], points)
    assert out["image"].dtype == np.uint8 and out["image"].shape == (48, 64, 3)


def test_the_same_generator_gives_the_same_image():
    a = PhotometricJitter()(_sample(5))["image"]
    b = PhotometricJitter()(_sample(5))["image"]
    c = PhotometricJitter()({**_sample(5), RNG_KEY: sample_rng(5, 1, 0)})["image"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_settings_are_refused():
    for settings in ({"brightness": 1.5}, {"contrast": -0.1}, {"gamma": float("nan")},
                     {"blur_probability": 2.0}, {"noise_std": -1.0}):
        with pytest.raises(ValueError):
            PhotometricJitter(**settings)
    with pytest.raises(ValueError, match="uint8"):
        PhotometricJitter()({**_sample(), "image": np.zeros((4, 4, 3), np.float32)})


def test_training_pairs_are_jittered_only_when_switched_on():
    off = DataConfig(image_height=32, image_width=48)
    on = DataConfig(image_height=32, image_width=48,
                    photometric=PhotometricConfig(enabled=True))

    def kinds(cfg, train):
        return [type(step) for step in pair_transform(cfg, train).transforms]

    assert PhotometricJitter not in kinds(off, True)
    assert PhotometricJitter in kinds(on, True)
    assert PhotometricJitter not in kinds(on, False)  # validation images stay as recorded
    assert kinds(on, True).index(PhotometricJitter) > kinds(on, True).index(RandomCrop)
