"""The matching half of `CalibrationNet` (paper §3.3, METHOD.md §4): which points are
matched to which cells, coarse (soft or hard) then fine matches, and the weighted EPnP pose
of a frame's matches.

`MatchingMixin` reads the attributes `CalibrationNet.__init__` sets (`alignment`, `matcher`,
`fine_matcher`, `stride`, `cell_convention`, `point_threshold`, `image_threshold`,
`min_match_points`, `max_match_points`, `min_match_cells`, `refine_steps`); its modules stay
`CalibrationNet`'s, so the state dict is unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from nclr_core.geometry.epnp import solve_epnp
from nclr_core.losses import sample_indices
from nclr_core.models.feature_grid import cell_centers


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest `scores` (all of them when fewer)."""
    return scores.topk(min(k, scores.numel())).indices


class MatchingMixin:
    """Matching and the matches' pose of `CalibrationNet` (see the module docstring)."""

    def _match_candidates(
        self,
        point_scores: torch.Tensor | None,
        image_scores: torch.Tensor | None,
        n: int,
        m: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (indices into the frame) to match and the (m,) bool mask of allowed cells.

        Without overlap scores: K_pts random points and every cell.
        """
        if point_scores is None or image_scores is None:
            everything = torch.ones(n, dtype=torch.bool, device=device)
            idx = sample_indices(everything, self.max_match_points)
            return idx, torch.ones(m, dtype=torch.bool, device=device)
        above = point_scores > self.point_threshold
        count = int(above.sum())
        if count < self.min_match_points:
            idx = _top_k(point_scores, self.max_match_points)
        else:
            idx = _top_k(point_scores.masked_fill(~above, float("-inf")),
                         min(self.max_match_points, count))
        return idx, self.allowed_cells(image_scores)

    def allowed_cells(self, image_scores: torch.Tensor) -> torch.Tensor:
        """(M,) bool cells a point may match: the predicted image overlap S^I > θ_i, or the
        `min_match_cells` highest scores when no cell passes. image_scores: (M,)."""
        cells = image_scores > self.image_threshold
        if not bool(cells.any()):
            cells = torch.zeros_like(cells)
            cells[_top_k(image_scores, self.min_match_cells)] = True
        return cells

    def match_points(
        self,
        point_feats: torch.Tensor,
        image_feats: torch.Tensor,
        image_scores: torch.Tensor | None = None,
        fine_image_feats: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Match P points of one frame to its image: coarse, then fine when given the fine map.

        Args:
            point_feats: (P, C) F^P rows of the points.
            image_feats: (C, h, w) F^I of the frame.
            image_scores: (h, w) S^I (cells allowed by `allowed_cells`), or None: every cell.
            fine_image_feats: (C_f, h2, w2) fine map of the frame (`extract_features`), or
                None: coarse pixels only.
        Returns:
            pixels (P, 2) network-image (u, v); confidence (P,) max_j w_ij of the coarse match.
        """
        c, h, w = image_feats.shape
        cells_uv = cell_centers(h, w, self.stride, convention=self.cell_convention,
                                device=image_feats.device)
        if image_scores is None:
            mask = torch.ones(h * w, dtype=torch.bool, device=image_feats.device)
        else:
            mask = self.allowed_cells(image_scores.reshape(-1))
        sim = self.alignment.similarity(point_feats, image_feats.reshape(c, -1).transpose(0, 1))
        pixels, confidence = self.matcher(sim, cells_uv, mask)
        if fine_image_feats is not None:
            pixels = self.refine_matches(point_feats, fine_image_feats, pixels)[0]
        return pixels, confidence

    def refine_matches(
        self, point_feats: torch.Tensor, fine_image_feats: torch.Tensor,
        coarse_pixels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fine stage on coarse matches of one frame (`FineMatcher.refine`).

        Args:
            point_feats: (P, C) F^P rows of the matched points.
            fine_image_feats: (C_f, h2, w2) the frame's `fine_image_feats`.
            coarse_pixels: (P, 2) network-image pixels (u, v) of their coarse matches,
                from any source (a window search around a prior, say).
        Returns:
            refined pixels (P, 2), network image; spread (P,) px of the window distribution.
        Raises:
            ValueError: the model has no fine stage.
        """
        if self.fine_matcher is None:
            raise ValueError("this model has no fine matching stage (model.fine_matching)")
        return self.fine_matcher.refine(self.fine_matcher.point_features(point_feats),
                                        fine_image_feats, coarse_pixels)

    def _frame_matches(
        self,
        slices: list[slice],
        feats: Mapping[str, torch.Tensor],
        image_flat: torch.Tensor,
        point_scores: torch.Tensor | None,
        image_scores: torch.Tensor | None,
        cells_uv: torch.Tensor,
        support: list[torch.Tensor] | None,
    ) -> list[dict[str, torch.Tensor]]:
        """Per-frame matches: of the predicted-overlap candidates, or of `support` (indices
        into each frame's points) when given. image_scores: (B, h*w) or None."""
        point_feats = feats["point_feats"]
        fine = feats.get("fine_image_feats")
        matches = []
        for b, sl in enumerate(slices):
            n = sl.stop - sl.start
            if n == 0:
                raise ValueError(f"frame {b} has no points")
            fs = None if point_scores is None else point_scores[sl]
            cs = None if image_scores is None else image_scores[b]
            if support is None:
                idx, cell_mask = self._match_candidates(
                    fs, cs, n, image_flat.shape[1], point_feats.device)
            else:
                idx = support[b]
                cell_mask = (torch.ones(image_flat.shape[1], dtype=torch.bool,
                                        device=point_feats.device)
                             if cs is None else self.allowed_cells(cs))
            sim = self.alignment.similarity(point_feats[sl][idx], image_flat[b])
            pixels, confidence = self.matcher(sim, cells_uv, cell_mask)
            weights = confidence if fs is None else fs[idx] * confidence
            match = {"point_index": idx + sl.start, "pixels": pixels, "weights": weights}
            if fine is not None:
                match["coarse_pixels"] = pixels
                match["pixels"], match["fine_spread"] = self.refine_matches(
                    point_feats[sl][idx], fine[b], pixels)
            matches.append(match)
        return matches

    def _solve(self, points: torch.Tensor, matches: list[dict[str, torch.Tensor]],
               K: torch.Tensor) -> Any:  # noqa: N803
        """Batched weighted EPnP on the frames' matches (frames without one: not valid)."""
        k = max(1, max(mt["point_index"].numel() for mt in matches))
        x3d, x2d, w = [], [], []
        for mt in matches:
            count = mt["point_index"].numel()
            xyz = points[mt["point_index"], :3].float()
            pixels, weights = mt["pixels"], mt["weights"]
            if count == 0:  # one dummy row of weight 0: an invalid pose, never NaN
                xyz, pixels = points.new_zeros(1, 3).float(), pixels.new_zeros(1, 2)
                weights = weights.new_zeros(1)
            pad = k - xyz.shape[0]
            # padding rows repeat a real point with weight 0: no influence on the EPnP
            x3d.append(torch.cat((xyz, xyz[:1].expand(pad, 3))))
            x2d.append(torch.cat((pixels, pixels[:1].expand(pad, 2))))
            w.append(torch.cat((weights, weights.new_zeros(pad))))
        return solve_epnp(
            torch.stack(x3d), torch.stack(x2d), K.float(), torch.stack(w), self.refine_steps
        )

    def _pose_support(self, batch: Mapping[str, Any], slices: list[slice]) -> list[torch.Tensor]:
        """Training's EPnP support (METHOD.md §9): per frame, at most K_pts random points of
        the ground-truth overlap, as indices into the frame's points."""
        overlap = batch["point_overlap"].to(torch.bool)
        return [sample_indices(overlap[sl], self.max_match_points) for sl in slices]

