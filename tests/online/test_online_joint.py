"""The joint stage (nclr_core.online.joint) on constructed matches of a known pose."""
import numpy as np
import pytest
from online_scene import T_TRUE, K, make_frame, seen_points
from scipy.stats import chi2

from nclr_core.online.joint import AXES, JointSettings, solve_joint
from nclr_core.online.matches import FrameMatches
from nclr_core.online.pose import apply_delta, pose_delta

ZERO = (0.0, 0.0, 0.0)
# no matcher floors: the constructed errors are independent Gaussians
PLAIN = JointSettings(consensus_threshold_px=36.0, frame_sigma_rot_deg=ZERO,
                      frame_sigma_trans_m=ZERO, common_sigma_rot_deg=ZERO,
                      common_sigma_trans_m=ZERO)


def _z(result) -> np.ndarray:
    """(6,) error of the estimate in units of its own σ per axis."""
    delta = pose_delta(result.estimate.T_cam_lidar, T_TRUE)
    return delta / np.sqrt(np.diag(result.estimate.covariance))


@pytest.mark.parametrize("kernel", ["cauchy", "huber"])
def test_recovers_the_pose_within_its_sigma_despite_outliers(kernel):
    rng = np.random.default_rng(0)
    frame = make_frame(rng, n=600, noise_px=3.0, near_outliers=0.2, far_outliers=0.1)
    result = solve_joint([frame], JointSettings(**{**PLAIN.__dict__, "kernel": kernel}))
    assert result.solved and result.reason == ""
    assert np.all(np.abs(_z(result)) < 3.0)
    delta = pose_delta(result.estimate.T_cam_lidar, T_TRUE)
    assert np.degrees(np.linalg.norm(delta[:3])) < 0.1 and np.linalg.norm(delta[3:]) < 0.05
    # the far outliers are not inliers; the noise scale comes back per axis
    mask = result.inlier_masks[0]
    assert mask.shape == (600,) and not mask[120:180].any()
    assert mask[180:].mean() > 0.95
    assert result.sigma_px == pytest.approx((3.0, 3.0), rel=0.15)
    assert result.inliers_per_frame == (int(mask.sum()),)


def test_covariance_is_consistent_by_monte_carlo():
    """Over 200 draws of two frames, the error's squared Mahalanobis distance averages the
    6 of a χ²₆, and each axis stays within 3σ as a Gaussian would."""
    rng = np.random.default_rng(1)
    z = np.array([_z(solve_joint([make_frame(rng, n=150, noise_px=2.0, near_outliers=0.1)
                                  for _ in range(2)], PLAIN)) for _ in range(200)])
    d2 = [zi @ zi for zi in z]  # axes nearly uncorrelated here; the full form below
    assert 4.5 < np.mean(d2) < 8.5
    assert np.mean(np.abs(z) <= 3.0) > 0.98
    assert 0.6 < np.var(z, axis=0).min() and np.var(z, axis=0).max() < 1.7
    assert np.mean(np.array(d2) < chi2.ppf(0.99, 6)) > 0.9


def test_frame_floor_averages_over_frames_and_the_common_floor_does_not():
    rng = np.random.default_rng(2)
    floors = JointSettings(**{**PLAIN.__dict__, "frame_sigma_trans_m": (0.2, 0.2, 0.2),
                              "common_sigma_rot_deg": (0.3, 0.3, 0.3)})
    one = solve_joint([make_frame(rng, noise_px=0.5)], floors)
    four = solve_joint([make_frame(rng, noise_px=0.5) for _ in range(4)], floors)
    # noise of 0.5 px leaves the floors dominant: σ_t ≈ 0.2 / √F, σ_rot ≈ 0.3 deg
    assert one.estimate.sigma_trans_m == pytest.approx([0.2] * 3, rel=0.05)
    assert four.estimate.sigma_trans_m == pytest.approx([0.1] * 3, rel=0.08)
    assert one.estimate.sigma_rot_deg == pytest.approx([0.3] * 3, rel=0.05)
    assert four.estimate.sigma_rot_deg == pytest.approx([0.3] * 3, rel=0.05)


def test_frames_that_disagree_inflate_the_sigma_to_their_spread():
    """Each frame seen under its own pose (2 cm apart on x): the frames' spread, not the
    tiny within-frame noise, sets σ_x."""
    rng = np.random.default_rng(3)
    frames = [make_frame(rng, noise_px=0.5,
                         T=apply_delta(T_TRUE, np.r_[0, 0, 0, rng.normal(0, 0.02), 0, 0]))
              for _ in range(12)]
    plain = solve_joint(frames, JointSettings(**{**PLAIN.__dict__, "min_frames_for_spread": 99}))
    spread = solve_joint(frames, PLAIN)
    assert spread.estimate.sigma_trans_m[0] > 2 * plain.estimate.sigma_trans_m[0]
    assert 0.002 < spread.estimate.sigma_trans_m[0] < 0.02  # about 0.02 / √12
    np.testing.assert_allclose(spread.estimate.T_cam_lidar, plain.estimate.T_cam_lidar)


def test_the_weakest_direction_is_named():
    """Far points in a narrow view leave translation poorly constrained; a bound between the
    two largest translation σ names exactly the largest one's axis."""
    rng = np.random.default_rng(4)
    points, uv = seen_points(rng, 400, depth=(60.0, 80.0))
    centre = np.abs(uv - K[:2, 2]).max(1) < 150
    frame = FrameMatches(points[centre], uv[centre] + rng.normal(0, 1.0, (centre.sum(), 2)),
                         np.ones(centre.sum()), K)
    result = solve_joint([frame], JointSettings(**{**PLAIN.__dict__, "min_inliers": 20}))
    sigma = np.sort(result.estimate.sigma_trans_m)
    weakest = AXES[int(np.argmax(result.estimate.sigma_trans_m))]
    warn = JointSettings(**{**PLAIN.__dict__, "min_inliers": 20, "warn_sigma_rot_deg": 90.0,
                            "warn_sigma_trans_m": float(np.sqrt(sigma[2] * sigma[1]))})
    warned = solve_joint([frame], warn)
    assert warned.warnings == (
        f"translation along the camera {weakest} poorly constrained: sigma {sigma[2]:.3f} m "
        f"> {warn.warn_sigma_trans_m} m",)


def test_a_start_pose_replaces_ransac_and_gives_the_same_solution():
    rng = np.random.default_rng(5)
    frames = [make_frame(rng, near_outliers=0.2) for _ in range(3)]
    from_ransac = solve_joint(frames, PLAIN)
    near = apply_delta(T_TRUE, np.array([0.002, -0.001, 0.001, 0.02, -0.01, 0.03]))
    from_start = solve_joint(frames, PLAIN, T_start=near)
    sigma = np.sqrt(np.diag(from_ransac.estimate.covariance))
    gap = pose_delta(from_ransac.estimate.T_cam_lidar, from_start.estimate.T_cam_lidar)
    assert np.all(np.abs(gap) < 0.05 * sigma)
    # a start pose far off keeps too few matches under the gate: RANSAC takes over
    far = apply_delta(T_TRUE, np.array([0.0, 0.15, 0.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(solve_joint(frames, PLAIN, T_start=far).estimate.T_cam_lidar,
                                  from_ransac.estimate.T_cam_lidar)


def test_pixel_settings_are_in_matching_pixels():
    """The same matches made at a third of the resolution (pixel_scale 3): a gate of 12
    matching px is 36 input px, so the near outliers (±35 px) pass it in both cases."""
    a = solve_joint([make_frame(np.random.default_rng(6), near_outliers=0.3)], PLAIN)
    b = solve_joint([make_frame(np.random.default_rng(6), near_outliers=0.3, pixel_scale=3.0)],
                    JointSettings(**{**PLAIN.__dict__, "consensus_threshold_px": 12.0}))
    np.testing.assert_allclose(a.estimate.T_cam_lidar, b.estimate.T_cam_lidar, atol=1e-9)


def test_not_solved_says_why_and_bad_input_raises():
    rng = np.random.default_rng(7)
    few = solve_joint([make_frame(rng, n=20)], PLAIN)
    assert not few.solved and few.estimate is None and "min_inliers" in few.reason
    assert few.inliers_per_frame == (0,)
    noise = solve_joint([make_frame(rng, far_outliers=1.0)], PLAIN)
    assert not noise.solved and noise.reason
    other_K = make_frame(rng)
    other_K = FrameMatches(other_K.points, other_K.pixels, other_K.weights, K * [[1.1], [1], [1]])
    with pytest.raises(ValueError, match="one camera"):
        solve_joint([make_frame(rng), other_K], PLAIN)
    with pytest.raises(ValueError, match="at least one"):
        solve_joint([], PLAIN)
    with pytest.raises(ValueError, match="kernel"):
        JointSettings(kernel="tukey")
    with pytest.raises(ValueError, match="three values"):
        JointSettings(frame_sigma_trans_m=(0.1, 0.1))
