"""How sure the refinement is: curvature, covariance and significance tests of its maximum.

The objective is a sum over the window's points, so its maximiser is an M-estimator: its
covariance is the sandwich `H^-1 B H^-1`, H the Hessian of J at the maximum and B the
covariance of J's gradient. Errors of nearby points are correlated (a contour's points
share its localisation error), so B is summed over clusters (image tiles of each frame),
`B = sum_c g_c g_c^T` with g_c the gradient of cluster c's share of J. The same clusters
give paired tests: is J at one pose higher than at another by more than its spread over the
clusters?
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from nclr_core.online.refine_objective import WindowObjective


def hessian(J: WindowObjective, delta: NDArray, step: NDArray) -> NDArray[np.float64]:
    """(6, 6) central finite-difference Hessian of J at δ (6,) with steps `step` (6,)."""
    H = np.zeros((6, 6))
    center = J(delta)
    E = np.diag(step)
    for i in range(6):
        H[i, i] = (J(delta + E[i]) - 2.0 * center + J(delta - E[i])) / step[i] ** 2
        for j in range(i + 1, 6):
            H[i, j] = H[j, i] = (J(delta + E[i] + E[j]) - J(delta + E[i] - E[j])
                                 - J(delta - E[i] + E[j]) + J(delta - E[i] - E[j])) / (
                4.0 * step[i] * step[j])
    return H


def cluster_gradients(J: WindowObjective, delta: NDArray, step: NDArray) -> NDArray:
    """(C, 6) gradient of each cluster's share of J at δ (central differences)."""
    gradients = []
    for i in range(6):
        e = np.zeros(6)
        e[i] = step[i]
        gradients.append((J.cluster_sums(delta + e) - J.cluster_sums(delta - e))
                         / (2.0 * step[i]))
    return np.stack(gradients, axis=1)


def sandwich_covariance(H: NDArray, G: NDArray) -> NDArray[np.float64]:
    """(6, 6) `H^-1 (G^T G) H^-1` for a negative definite Hessian H (6, 6) and the cluster
    gradients G (C, 6)."""
    H_inv = np.linalg.inv(H)
    covariance = H_inv @ (G.T @ G) @ H_inv
    return 0.5 * (covariance + covariance.T)


def paired_t(J: WindowObjective, delta_a: NDArray, delta_b: NDArray) -> float:
    """t statistic of J(δ_a) - J(δ_b) paired over the clusters that hold points: the mean
    difference over its standard error. +inf when every cluster gains alike."""
    difference = J.cluster_sums(delta_a) - J.cluster_sums(delta_b)
    difference = difference[J.cluster_weights > 0.0]
    count = len(difference)
    if count < 2:
        return 0.0
    spread = np.std(difference, ddof=1)
    mean = difference.mean()
    if spread == 0.0:
        return float(np.inf) if mean > 0.0 else 0.0
    return float(mean / (spread / np.sqrt(count)))
