import math

import numpy as np
import pytest

from nclr_core.segmentation_metrics import ConfusionMatrix, PanopticQuality

IGNORE = 255


def test_miou_on_a_hand_computed_confusion_matrix_with_ignore():
    target = np.array([0, 0, 0, 1, 1, 2, IGNORE, IGNORE])
    pred = np.array([0, 0, 1, 1, 0, 2, 2, 1])
    cm = ConfusionMatrix(4, IGNORE)
    cm.update(pred[:4], target[:4])  # accumulates over calls
    cm.update(pred[4:], target[4:])
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 0], expected[2, 2] = 2, 1, 1, 1, 1
    np.testing.assert_array_equal(cm.matrix, expected)
    # class 0: tp 2, fp 1 (a 1 predicted 0), fn 1 -> 2/4; class 1: tp 1, fp 1, fn 1 -> 1/3;
    # class 2: 1/1 (the ignored points predicted 2 do not count); class 3 absent -> NaN.
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [0.5, 1 / 3, 1.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)


def test_class_only_predicted_has_zero_iou_and_counts_in_the_mean():
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(np.array([0, 2]), np.array([0, 0]))
    np.testing.assert_allclose(cm.iou()[[0, 2]], [0.5, 0.0])
    assert math.isnan(cm.iou()[1])
    assert cm.miou() == pytest.approx(0.25)


def test_confusion_matrix_rejects_bad_labels():
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match="pred labels must lie in 0..2"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="differ"):
        cm.update(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="1-D integer"):
        cm.update(np.array([0.5]), np.array([0]))


def test_panoptic_quality_on_a_hand_case():
    # Class 0 is a thing with two ground-truth instances (ids 1: 4 points, 2: 4 points),
    # class 1 is stuff (instance 0, 4 points); two ignored points at the end.
    gt_sem = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, IGNORE, IGNORE])
    gt_inst = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0])
    # Prediction: instance 7 = 3 of gt 1's points (IoU 3/4: TP); gt 1's 4th point and two of
    # gt 2's points in instance 8 (IoU with gt 2: 2/5, no match); gt 2's other two points are
    # called stuff; the stuff class gets its 4 points + those 2 (IoU 4/6: TP).
    pred_sem = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    pred_inst = np.array([7, 7, 7, 8, 8, 8, 0, 0, 0, 0, 0, 0, 9, 9])
    pq = PanopticQuality(2, IGNORE, min_points=1)
    pq.update(pred_sem, pred_inst, gt_sem, gt_inst)
    # class 0: TP 1 (IoU 0.75), FP 1 (instance 8), FN 1 (gt 2) -> SQ 0.75, RQ 1/2
    # class 1: TP 1 (IoU 4/6), no FP, no FN -> SQ 2/3, RQ 1
    per_class = pq.per_class()
    np.testing.assert_allclose(per_class["sq"], [0.75, 2 / 3])
    np.testing.assert_allclose(per_class["rq"], [0.5, 1.0])
    np.testing.assert_allclose(per_class["pq"], [0.375, 2 / 3])
    summary = pq.summary()
    assert summary["pq"] == pytest.approx((0.375 + 2 / 3) / 2)
    assert summary["sq"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert summary["rq"] == pytest.approx(0.75)

    # With min_points 5 the small unmatched segments (3 and 4 points) are not counted.
    small = PanopticQuality(2, IGNORE, min_points=5)
    small.update(pred_sem, pred_inst, gt_sem, gt_inst)
    np.testing.assert_allclose(small.per_class()["rq"], [1.0, 1.0])


def test_panoptic_perfect_prediction_and_unseen_class():
    sem = np.array([0, 0, 0, 2, 2])
    inst = np.array([1, 1, 3, 0, 0])
    pq = PanopticQuality(3, IGNORE, min_points=1)
    pq.update(sem, inst * 10, sem, inst)  # instance ids need only be consistent
    per_class = pq.per_class()
    np.testing.assert_allclose(per_class["pq"][[0, 2]], [1.0, 1.0])
    assert math.isnan(per_class["pq"][1])
    assert pq.summary()["pq"] == pytest.approx(1.0)


def _brute_force_pq(frames, num_classes, min_points):
    """Straight from the definition: segment sets per class, all pairs compared."""
    tp, fp, fn, iou_sum = (np.zeros(num_classes) for _ in range(4))
    for pred_sem, pred_inst, gt_sem, gt_inst in frames:
        keep = gt_sem != IGNORE
        pred_sem, pred_inst, gt_sem, gt_inst = (a[keep] for a in (pred_sem, pred_inst, gt_sem,
                                                                   gt_inst))
        for c in range(num_classes):
            preds = {i: set(np.flatnonzero((pred_sem == c) & (pred_inst == i)))
                     for i in np.unique(pred_inst[pred_sem == c])}
            gts = {i: set(np.flatnonzero((gt_sem == c) & (gt_inst == i)))
                   for i in np.unique(gt_inst[gt_sem == c])}
            matched_p, matched_g = set(), set()
            for gi, g in gts.items():
                for pi, p in preds.items():
                    iou = len(g & p) / len(g | p)
                    if iou > 0.5:
                        tp[c] += 1
                        iou_sum[c] += iou
                        matched_p.add(pi)
                        matched_g.add(gi)
            fn[c] += sum(len(g) >= min_points for gi, g in gts.items() if gi not in matched_g)
            fp[c] += sum(len(p) >= min_points for pi, p in preds.items() if pi not in matched_p)
    return tp, fp, fn, iou_sum


def test_panoptic_quality_matches_a_brute_force_count_on_random_frames():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(5):
        n = 300
        gt_sem = rng.integers(0, 4, n)
        gt_sem[rng.random(n) < 0.1] = IGNORE
        gt_inst = rng.integers(0, 4, n)
        # predictions: mostly the truth, partly corrupted, so that some segments match
        pred_sem = np.where(rng.random(n) < 0.8, gt_sem, rng.integers(0, 4, n))
        pred_sem[pred_sem == IGNORE] = 0
        pred_inst = np.where(rng.random(n) < 0.85, gt_inst + 10, rng.integers(0, 3, n))
        frames.append((pred_sem, pred_inst, gt_sem, gt_inst))
    pq = PanopticQuality(4, IGNORE, min_points=8)
    for frame in frames:
        pq.update(*frame)
    tp, fp, fn, iou_sum = _brute_force_pq(frames, 4, 8)
    np.testing.assert_array_equal(pq.tp, tp)
    np.testing.assert_array_equal(pq.fp, fp)
    np.testing.assert_array_equal(pq.fn, fn)
    np.testing.assert_allclose(pq.iou_sum, iou_sum)
    assert tp.sum() > 0 and fp.sum() > 0 and fn.sum() > 0
