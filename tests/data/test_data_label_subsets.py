import numpy as np
import pytest

from nclr_core.data.label_subsets import select_labelled_frames, subset_size

FRAMES = [(f"{s:02d}", f"{i:06d}") for s in range(3) for i in range(400)]


def test_same_fraction_and_seed_give_the_same_subset_in_any_listing_order():
    a = select_labelled_frames(FRAMES, 0.1, seed=1)
    b = select_labelled_frames(FRAMES, 0.1, seed=1)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 120 and np.all(np.diff(a) > 0)
    shuffled = list(np.random.default_rng(0).permutation(len(FRAMES)))
    c = select_labelled_frames([FRAMES[i] for i in shuffled], 0.1, seed=1)
    assert {FRAMES[shuffled[i]] for i in c} == {FRAMES[i] for i in a}


def test_another_seed_gives_another_subset():
    a = set(select_labelled_frames(FRAMES, 0.1, seed=0).tolist())
    b = set(select_labelled_frames(FRAMES, 0.1, seed=1).tolist())
    assert a != b
    assert len(a & b) < 60  # unrelated draws overlap by about 10 % of 120, not wholesale


def test_subsets_nest_across_fractions_for_one_seed():
    small = set(select_labelled_frames(FRAMES, 0.01, seed=2).tolist())
    mid = set(select_labelled_frames(FRAMES, 0.1, seed=2).tolist())
    full = select_labelled_frames(FRAMES, 1.0, seed=2)
    assert len(small) == 12 and small < mid
    np.testing.assert_array_equal(full, np.arange(len(FRAMES)))


def test_subset_size_rounds_and_keeps_at_least_one_frame():
    assert subset_size(10, 0.001) == 1
    assert subset_size(19130, 0.001) == 19
    assert subset_size(5, 0.5) == 3  # 2.5 rounds half up
    with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\]"):
        subset_size(10, 0.0)
    with pytest.raises(ValueError, match="no frames"):
        subset_size(0, 0.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="duplicate"):
        select_labelled_frames([("00", "1"), ("00", "1")], 0.5, 0)
    with pytest.raises(ValueError, match="seed"):
        select_labelled_frames(FRAMES, 0.5, -1)
