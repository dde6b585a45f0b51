"""nclr_ros.node_common: QoS from the reliability parameter, bad input counted and throttled."""
from __future__ import annotations

import pytest
from rclpy.qos import ReliabilityPolicy

from nclr_ros.node_common import BadInputLog, subscription_qos


class _Logger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def test_subscription_qos_from_reliability():
    assert subscription_qos("best_effort", 3).reliability == ReliabilityPolicy.BEST_EFFORT
    qos = subscription_qos("reliable", 7)
    assert qos.reliability == ReliabilityPolicy.RELIABLE and qos.depth == 7
    with pytest.raises(ValueError, match="reliability must be best_effort or reliable"):
        subscription_qos("sometimes", 5)
    with pytest.raises(ValueError, match="qos_depth must be >= 1"):
        subscription_qos("reliable", 0)


def test_bad_input_counted_every_time_warned_once_per_throttle():
    logger = _Logger()
    log = BadInputLog(logger, throttle_s=3600.0)
    for _ in range(3):
        log.report("empty_cloud", "cloud dropped")
    log.report("bad_cloud", "cloud dropped: broken")
    assert log.counts() == {"bad_input.bad_cloud": 1, "bad_input.empty_cloud": 3}
    assert logger.warnings == ["[empty_cloud] cloud dropped (x1 so far)",
                               "[bad_cloud] cloud dropped: broken (x1 so far)"]
    unthrottled = BadInputLog(logger, throttle_s=0.0)
    unthrottled.report("empty_cloud", "again")
    unthrottled.report("empty_cloud", "again")
    assert logger.warnings[-1] == "[empty_cloud] again (x2 so far)"


def test_newest_job_worker_replaces_waiting_jobs_and_reports_errors():
    import threading
    import time

    from nclr_ros.node_common import NewestJobWorker

    class Log:
        def __init__(self):
            self.errors = []

        def error(self, text):
            self.errors.append(text)

    gate, done, seen = threading.Event(), threading.Event(), []

    def process(job):
        gate.wait(10)
        seen.append(job)
        if job == "bad":
            raise RuntimeError("boom")
        if job == "last":
            done.set()

    lock, log, reported = threading.Lock(), Log(), []
    worker = NewestJobWorker(process, log, "test job", lock, "test_worker",
                             on_error=lambda job, err: reported.append((job, repr(err))))
    with lock:
        worker.submit("first")
    while True:  # wait until the worker holds "first"
        with lock:
            if worker.in_progress:
                break
        time.sleep(0.001)
    with lock:
        for job in ("a", "b", "bad"):
            worker.submit(job)
        assert worker.pending == 1 and worker.dropped == 2
    gate.set()
    while True:
        with lock:
            if worker.processed == 2:
                break
        time.sleep(0.001)
    with lock:
        worker.submit("last")
    assert done.wait(10)
    worker.stop()
    assert seen == ["first", "bad", "last"]
    assert worker.processed == 3 and worker.dropped == 2
    assert log.errors == ["test job failed: RuntimeError('boom')"]
    assert reported == [("bad", "RuntimeError('boom')")]
    with lock:
        assert worker.error_counts() == {"worker_errors.RuntimeError": 1}


def _calibrator_loaded(node) -> bool:
    return node.pipeline.calibrator.model.use_overlap


def _segmenter_loaded(node) -> bool:
    from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES

    return node.segmenter.class_names == list(SEMANTIC_KITTI_CLASSES)


@pytest.mark.parametrize("module_name, class_name, loaded", [
    ("calibration_node", "CalibrationNode", _calibrator_loaded),
    ("segmentation_node", "SegmentationNode", _segmenter_loaded),
])
def test_an_empty_model_path_loads_the_shipped_model(module_name, class_name, loaded):
    import importlib
    import random

    import rclpy

    from nclr_ros.package_files import package_file

    module = importlib.import_module(f"nclr_ros.{module_name}")
    shipped = package_file("models", module.SHIPPED_MODEL)
    assert shipped is not None, f"models/{module.SHIPPED_MODEL} is missing from the package"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    try:
        node = getattr(module, class_name)(context=context)
        try:
            assert node.params["model_path"] == str(shipped)
            assert loaded(node)
        finally:
            node.shutdown()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
