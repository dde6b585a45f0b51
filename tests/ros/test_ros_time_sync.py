"""Approximate-time pairing: newest pair wins, drops are counted, offsets are reported."""
import threading

import pytest

from nclr_core.data.rosbag.time_sync import ApproximateTimePairer


def _check_accounting(sync):
    c = sync.counters
    assert c.received_images == c.paired + c.dropped_images + c.queued_images
    assert c.received_clouds == c.paired + c.dropped_clouds + c.queued_clouds


def test_pairs_within_slop_and_reports_offset_when_nothing_pairs():
    sync = ApproximateTimePairer(slop=0.02, queue_size=5)
    assert sync.push_image(10.00, "img0") is None
    pair = sync.push_cloud(10.01, "pc0")
    assert pair is not None
    assert (pair.image, pair.cloud) == ("img0", "pc0")
    assert pair.offset == pytest.approx(-0.01)
    # A constant 0.3 s offset never pairs; the measured offset says so.
    assert sync.push_image(11.0, "img1") is None
    assert sync.push_cloud(10.7, "pc1") is None
    assert sync.last_unpaired_offset == pytest.approx(0.3)
    assert sync.push_cloud(11.3, "pc2") is None
    assert sync.last_unpaired_offset == pytest.approx(-0.3)
    assert sync.counters.paired == 1
    _check_accounting(sync)


def test_newest_pair_is_preferred_and_older_messages_dropped():
    sync = ApproximateTimePairer(slop=0.03, queue_size=10)
    # Images arrive at 10 Hz; clouds lag by 0.25 s of transport.
    for k in range(4):
        assert sync.push_image(k * 0.1, f"img{k}") is None
    pair = sync.push_cloud(0.21, "pc2")
    assert (pair.image, pair.cloud) == ("img2", "pc2")
    c = sync.counters
    assert c.dropped_images == 2  # img0 and img1 can only form older pairs
    assert sync.counters.queued_images == 1  # img3 is newer and waits for its cloud
    # A late cloud older than the last pair is dropped, not paired with an older image.
    assert sync.push_cloud(0.09, "pc1_late") is None
    assert sync.counters.dropped_clouds == 1
    pair = sync.push_cloud(0.31, "pc3")
    assert (pair.image, pair.cloud) == ("img3", "pc3")
    _check_accounting(sync)


def test_closest_partner_is_chosen():
    sync = ApproximateTimePairer(slop=0.05, queue_size=10)
    sync.push_cloud(1.00, "a")
    sync.push_cloud(1.04, "b")
    pair = sync.push_image(1.03, "img")
    assert pair.cloud == "b"
    assert sync.counters.dropped_clouds == 1
    _check_accounting(sync)


def test_queue_overflow_drops_oldest():
    sync = ApproximateTimePairer(slop=0.01, queue_size=3)
    for k in range(5):
        sync.push_image(float(k), k)
    assert sync.counters.queued_images == 3
    assert sync.counters.dropped_images == 2
    assert sync.push_cloud(1.0, "old") is None  # image 1 was dropped by the overflow
    pair = sync.push_cloud(4.0, "new")
    assert pair.image == 4
    _check_accounting(sync)


def test_out_of_order_arrival_keeps_newer_messages():
    sync = ApproximateTimePairer(slop=0.01, queue_size=5)
    sync.push_image(2.0, "late_newer")
    sync.push_image(1.0, "older")
    pair = sync.push_cloud(1.0, "pc")
    assert pair.image == "older"
    assert sync.counters.queued_images == 1  # the image at 2.0 is newer and still waits
    assert sync.push_cloud(2.0, "pc2").image == "late_newer"
    _check_accounting(sync)


def test_clock_jump_backwards_resets_pairing():
    sync = ApproximateTimePairer(slop=0.01, queue_size=5, reset_after_backwards_s=1.0)
    sync.push_image(100.0, "a")
    assert sync.push_cloud(100.0, "b") is not None
    # A looping bag restarts at t=0: without a reset nothing would ever pair again.
    sync.push_image(0.0, "c")
    assert sync.counters.clock_resets == 1
    pair = sync.push_cloud(0.005, "d")
    assert (pair.image, pair.cloud) == ("c", "d")
    _check_accounting(sync)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimePairer(slop=-1.0)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimePairer(slop=0.1, queue_size=0)
    with pytest.raises(ValueError, match="finite"):
        ApproximateTimePairer(slop=0.1).push_image(float("nan"), None)


def test_concurrent_pushes_keep_counters_consistent():
    sync = ApproximateTimePairer(slop=0.004, queue_size=4)
    n = 2000
    pairs = []

    def feed(push, jitter):
        for k in range(n):
            pair = push(k * 0.01 + jitter, k)
            if pair is not None:
                pairs.append(pair)

    threads = [threading.Thread(target=feed, args=(sync.push_image, 0.0)),
               threading.Thread(target=feed, args=(sync.push_cloud, 0.003))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    c = sync.counters
    assert c.received_images == c.received_clouds == n
    assert c.paired == len(pairs) > 0
    assert all(abs(p.offset) <= 0.004 for p in pairs)
    _check_accounting(sync)
