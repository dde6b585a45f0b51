"""Sample transforms keep K consistent with the image (nclr_core.data.transforms)."""
from collections.abc import Callable

import numpy as np
import pytest

from nclr_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    CropPointRange,
    NormalizeImage,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeImage,
    ResizeToCover,
    SubsamplePoints,
    sample_rng,
)

K0 = np.array([[30.0, 0.0, 23.7], [0.0, 28.0, 11.2], [0.0, 0.0, 1.0]])


def _ramp_sample(h: int = 24, w: int = 48) -> dict:
    """float32 image whose pixel (v, u) holds (u, v, 0): its own source coordinates."""
    v, u = np.indices((h, w), dtype=np.float32)
    return {"image": np.stack([u, v, np.zeros_like(u)], axis=-1), "K": K0.copy()}


def _source_of_pixels(K_new: np.ndarray, uv_new: np.ndarray) -> np.ndarray:
    """Where the rays of the new image's pixels land in the original image (via K0)."""
    rays = np.linalg.solve(K_new, np.vstack([uv_new.T, np.ones(len(uv_new))]))
    src = K0 @ rays
    return (src[:2] / src[2]).T


def _check_k_matches_image(out: dict, margin: int, atol: float) -> None:
    h, w = out["image"].shape[:2]
    v, u = np.indices((h - 2 * margin, w - 2 * margin)) + margin
    uv = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    expected = _source_of_pixels(out["K"], uv)
    np.testing.assert_allclose(out["image"][v.ravel(), u.ravel(), :2], expected, atol=atol)


# Interior pixels of a resampled linear ramp hold their source coordinates: exactly for
# bilinear enlarging and integer-factor area shrinking; area shrinking by 1.5 / 3 treats pixels
# as constant patches, which moves values by up to 1/12 px (the shortcut cx' = sx cx would be
# off by 0.5 (1 - sx) = 0.17 / 0.33 px there).
@pytest.mark.parametrize(
    ("height", "width", "atol"), [(12, 24, 1e-4), (36, 60, 1e-4), (8, 32, 0.09)]
)
def test_resize_updates_k_to_the_resampled_pixels(height: int, width: int, atol: float) -> None:
    out = ResizeImage(height, width)(_ramp_sample())
    assert out["image"].shape == (height, width, 3)
    _check_k_matches_image(out, margin=2, atol=atol)


def test_resize_keeps_aspect_when_width_is_omitted() -> None:
    sample = {"image": np.zeros((375, 1242, 3), dtype=np.uint8), "K": K0.copy()}
    out = ResizeImage(160)(sample)
    assert out["image"].shape == (160, 530, 3) and out["image"].dtype == np.uint8


@pytest.mark.parametrize(
    ("hw", "target", "expected"),
    [
        ((375, 1242), (160, 512), (160, 530)),  # KITTI
        ((900, 1600), (160, 320), (180, 320)),  # nuScenes: height 160 alone is too narrow
        ((80, 320), (160, 512), (160, 640)),
    ],
)
def test_resize_to_cover_fits_the_crop(
    hw: tuple[int, int], target: tuple[int, int], expected: tuple[int, int]
) -> None:
    sample = {"image": np.zeros((*hw, 3), dtype=np.uint8), "K": K0.copy()}
    out = ResizeToCover(*target)(sample)
    assert out["image"].shape[:2] == expected
    assert CenterCrop(*target)(out)["image"].shape[:2] == target


def test_crops_update_k() -> None:
    out = CenterCrop(10, 20)(_ramp_sample())
    assert out["image"].shape == (10, 20, 3)
    assert out["image"][0, 0, :2].tolist() == [14.0, 7.0]
    _check_k_matches_image(out, margin=0, atol=1e-9)
    for index in range(5):
        sample = {**_ramp_sample(), "rng": sample_rng(0, 0, index)}
        out = RandomCrop(10, 20)(sample)
        assert out["image"].shape == (10, 20, 3)
        _check_k_matches_image(out, margin=0, atol=1e-9)
    with pytest.raises(ValueError, match="resize it first"):
        CenterCrop(30, 20)(_ramp_sample())


def test_random_crop_positions_vary_and_reproduce() -> None:
    def corner(index: int) -> list[float]:
        out = RandomCrop(10, 20)({**_ramp_sample(), "rng": sample_rng(4, 1, index)})
        return out["image"][0, 0, :2].tolist()

    corners = [corner(i) for i in range(8)]
    assert len({tuple(c) for c in corners}) > 1
    assert corner(3) == corners[3]


def test_flip_projects_points_onto_the_mirrored_pixels() -> None:
    h, w = 24, 48
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-3, 3, 30), rng.uniform(-2, 2, 30), rng.uniform(4, 9, 30)])
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[5, 7] = (255, 0, 0)
    out = RandomHorizontalFlip(p=1.0)({"image": image.copy(), "K": K0.copy()})
    assert out["image"][5, w - 1 - 7].tolist() == [255, 0, 0]
    assert out["image"][5, 7].tolist() == [0, 0, 0]
    before = (K0 @ pts.T).T
    after = (out["K"] @ pts.T).T
    u_before = before[:, 0] / before[:, 2]
    u_after = after[:, 0] / after[:, 2]
    np.testing.assert_allclose(u_after, w - 1 - u_before, atol=1e-9)
    np.testing.assert_allclose(after[:, 1] / after[:, 2], before[:, 1] / before[:, 2])
    # The pixel content follows: a ramp's mirrored pixels hold their source coordinates.
    _check_k_matches_image(RandomHorizontalFlip(p=1.0)(_ramp_sample()), margin=0, atol=1e-9)
    kept = RandomHorizontalFlip(p=0.0)({"image": image.copy(), "K": K0.copy()})
    np.testing.assert_array_equal(kept["image"], image)
    np.testing.assert_array_equal(kept["K"], K0)


def _cloud_sample() -> dict:
    xyz = np.array([[0.0, 0.0, 0.0], [51.2, -51.2, 1.0], [51.3, 0.0, 0.0], [0.0, 0.0, -3.1],
                    [-10.0, 20.0, -2.9], [5.0, 60.0, 0.0]], dtype=np.float32)
    return {
        "points": np.hstack([xyz, np.arange(6, dtype=np.float32)[:, None]]),
        "labels": np.arange(6, dtype=np.int64) + 10,
        "instances": np.arange(6, dtype=np.int64) + 100,
    }


def test_crop_point_range_filters_every_point_array() -> None:
    out = CropPointRange()(_cloud_sample())
    assert out["points"][:, 3].tolist() == [0.0, 1.0, 4.0]
    assert out["labels"].tolist() == [10, 11, 14]
    assert out["instances"].tolist() == [100, 101, 104]


def test_subsample_points_keeps_arrays_aligned_and_reproduces() -> None:
    def run(index: int) -> dict:
        return SubsamplePoints(4)({**_cloud_sample(), "rng": sample_rng(0, 0, index)})

    out = run(0)
    assert len(out["points"]) == 4
    np.testing.assert_array_equal(out["labels"], out["points"][:, 3].astype(np.int64) + 10)
    assert len(np.unique(out["points"][:, 3])) == 4
    np.testing.assert_array_equal(run(0)["points"], out["points"])
    small = SubsamplePoints(10, seed=0)(_cloud_sample())
    assert len(small["points"]) == 6
    with pytest.raises(ValueError, match="max_points"):
        SubsamplePoints(0)


def test_normalize_image_and_compose() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[..., 0] = 255
    pipeline = Compose([ResizeImage(2, 3), NormalizeImage()])
    out = pipeline({"image": image, "K": K0.copy()})
    assert out["image"].shape == (3, 2, 3) and out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"][0], (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
                               rtol=1e-6)
    np.testing.assert_allclose(out["image"][2], -IMAGENET_MEAN[2] / IMAGENET_STD[2], rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        NormalizeImage()({"image": np.zeros((2, 2, 3), dtype=np.float32)})


def test_bad_rng_and_image_raise() -> None:
    with pytest.raises(TypeError, match="Generator"):
        RandomHorizontalFlip()({**_ramp_sample(), "rng": 3})
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ResizeImage(4, 4)({"image": np.zeros((4, 4)), "K": K0})
    with pytest.raises(ValueError, match="non-negative"):
        sample_rng(-1, 0, 0)


@pytest.mark.parametrize(
    "transform", [ResizeImage(12), CenterCrop(8, 8), RandomCrop(8, 8), RandomHorizontalFlip()]
)
def test_image_warps_refuse_samples_with_pixel_ground_truth(transform: Callable) -> None:
    sample = {**_ramp_sample(), "image_overlap": np.zeros((6, 12), dtype=bool)}
    with pytest.raises(ValueError, match="before PairSampler"):
        transform(sample)
