"""Properties of the one frame sampler both loaders use (kiclip.data.sampling)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kiclip.data.sampling import (
    CLIP_MEAN,
    CLIP_STD,
    ClipSpec,
    align_to_key_frames,
    plan_clip,
    resized_shape,
    sample_frame_indices,
)

videos = st.integers(1, 400)
frames_ = st.integers(1, 16)
strides = st.integers(1, 20)
keys = st.text(min_size=0, max_size=20)


@settings(max_examples=200, deadline=None)
@given(videos, frames_, strides, st.integers(0, 10**6), st.integers(0, 50), keys)
def test_train_window_in_bounds_strided_and_clamped(total, t, s, seed, epoch, key):
    idx = sample_frame_indices(total, t, s, mode="train", seed=seed, epoch=epoch, key=key)
    assert idx.shape == (1, t) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() <= total - 1
    span = (t - 1) * s + 1
    unclamped = idx[0, 0] + s * np.arange(t)
    if span <= total:
        assert np.array_equal(idx[0], unclamped)  # a full window at the stride
    else:
        assert idx[0, 0] == 0  # too short: start at 0, the tail repeats the last frame
        assert np.array_equal(idx[0], np.minimum(unclamped, total - 1))
        assert idx[0, -1] == total - 1


@settings(max_examples=200, deadline=None)
@given(videos, frames_, strides, st.integers(1, 5))
def test_test_views_spread_evenly_and_cover_the_video(total, t, s, v):
    idx = sample_frame_indices(total, t, s, mode="test", num_views=v)
    assert idx.shape == (v, t)
    assert idx.min() >= 0 and idx.max() <= total - 1
    starts = idx[:, 0]
    assert np.all(np.diff(starts) >= 0)
    last_start = max(total - ((t - 1) * s + 1), 0)
    if v > 1:
        assert starts[0] == 0 and starts[-1] == last_start  # first and last window reached
        gaps = np.diff(starts)
        assert gaps.max() - gaps.min() <= 1  # evenly spread (up to rounding)
    else:
        assert starts[0] == last_start // 2


@settings(max_examples=100, deadline=None)
@given(videos, st.integers(0, 1000), st.integers(0, 20), keys)
def test_deterministic_per_seed_epoch_key(total, seed, epoch, key):
    a = sample_frame_indices(total, 4, 3, seed=seed, epoch=epoch, key=key)
    b = sample_frame_indices(total, 4, 3, seed=seed, epoch=epoch, key=key)
    assert np.array_equal(a, b)


def test_draws_differ_across_keys_and_epochs():
    starts = {int(sample_frame_indices(1000, 8, 16, seed=0, epoch=e, key=k)[0, 0])
              for e in range(3) for k in ("a", "b", "c", "d")}
    assert len(starts) > 6


def test_stable_hash_not_python_hash():
    # Fixed expectation: must not change between processes (PYTHONHASHSEED) or releases.
    a = sample_frame_indices(1000, 8, 16, seed=1, epoch=2, key="video_0001")
    assert a[0].tolist() == list(range(825, 938, 16))
    plan = plan_clip(1000, 240, 320, ClipSpec(), mode="train", seed=1, epoch=2, key="video_0001")
    assert np.array_equal(plan.frames, a)  # the plan's frames are the sampler's frames


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 600), st.integers(16, 600), st.integers(8, 64), st.integers(0, 99), keys)
def test_plan_crop_fits_and_jitter_in_range(h, w, size, seed, key):
    spec = ClipSpec(num_frames=2, stride=2, image_size=size, num_views=3)
    for mode in ("train", "test"):
        plan = plan_clip(50, h, w, spec, mode=mode, seed=seed, epoch=0, key=key)
        rh, rw = plan.resize
        short = min(rh, rw)
        assert size <= short <= int(size * 256 / 224)
        top, left = plan.crop
        assert 0 <= top <= rh - size and 0 <= left <= rw - size
        if mode == "test":
            assert short == size and not plan.flip
            assert (top, left) == ((rh - size) // 2, (rw - size) // 2)


def test_resized_shape_keeps_aspect():
    assert resized_shape(240, 320, 224) == (224, 299)
    assert resized_shape(320, 240, 224) == (299, 224)
    assert resized_shape(256, 256, 224) == (224, 224)


key_frame_sets = st.lists(st.integers(1, 399), max_size=30).map(
    lambda rest: np.array(sorted({0, *rest}), np.int64))  # frame 0 is always a key frame


def _plans_equal(a, b) -> bool:
    return (np.array_equal(a.frames, b.frames) and a.frames.dtype == b.frames.dtype
            and (a.resize, a.crop, a.flip) == (b.resize, b.crop, b.flip))


@settings(max_examples=200, deadline=None)
@given(videos, key_frame_sets, st.sampled_from(["train", "test"]), st.integers(0, 10**6), keys)
def test_keyframe_windows_off_ignores_key_frames(total, key_frames, mode, seed, key):
    spec = ClipSpec(num_frames=8, stride=16, image_size=32)
    without = plan_clip(total, 40, 60, spec, mode=mode, seed=seed, epoch=1, key=key)
    given_keys = plan_clip(total, 40, 60, spec, mode=mode, seed=seed, epoch=1, key=key,
                           key_frames=key_frames)
    assert _plans_equal(without, given_keys)


@settings(max_examples=300, deadline=None)
@given(videos, key_frame_sets, frames_, strides, st.sampled_from(["train", "test"]),
       st.integers(0, 10**6), keys)
def test_keyframe_windows_start_on_the_nearest_key_frame_that_fits(total, key_frames, t, s, mode,
                                                                   seed, key):
    spec = ClipSpec(num_frames=t, stride=s, image_size=32, keyframe_windows=True)
    drawn = plan_clip(total, 40, 60, ClipSpec(num_frames=t, stride=s, image_size=32), mode=mode,
                      seed=seed, epoch=0, key=key)
    aligned = plan_clip(total, 40, 60, spec, mode=mode, seed=seed, epoch=0, key=key,
                        key_frames=key_frames)
    assert (aligned.resize, aligned.crop, aligned.flip) == (drawn.resize, drawn.crop, drawn.flip)
    assert aligned.frames.shape == drawn.frames.shape
    assert aligned.frames.min() >= 0 and aligned.frames.max() <= total - 1
    last_start = max(total - ((t - 1) * s + 1), 0)
    fitting = key_frames[key_frames <= last_start]
    for start, was in zip(aligned.frames[:, 0], drawn.frames[:, 0]):
        assert start in fitting
        distance = np.abs(fitting - was)
        nearest = fitting[distance == distance.min()][0]  # the earlier one on a tie
        assert start == nearest
    unclamped = aligned.frames[:, :1] + s * np.arange(t)
    assert np.array_equal(aligned.frames, np.minimum(unclamped, total - 1))


def test_keyframe_windows_with_a_gop_dividing_the_stride_want_only_key_frames():
    total, gop = 250, 8
    key_frames = np.arange(0, total, gop)
    spec = ClipSpec(num_frames=8, stride=16, image_size=32, keyframe_windows=True)
    for mode in ("train", "test"):
        for key in map(str, range(50)):
            plan = plan_clip(total, 40, 60, spec, mode=mode, seed=0, epoch=0, key=key,
                             key_frames=key_frames)
            assert np.all(plan.frames % gop == 0) and plan.frames.max() < total


def test_keyframe_windows_on_a_short_video_start_at_frame_0():
    spec = ClipSpec(num_frames=8, stride=16, image_size=32, num_views=3, keyframe_windows=True)
    for mode in ("train", "test"):
        plan = plan_clip(50, 40, 60, spec, mode=mode, seed=0, epoch=0, key="k",
                         key_frames=np.array([0, 16, 32, 48]))
        assert np.all(plan.frames[:, 0] == 0)
        assert np.array_equal(plan.frames[0], np.minimum(16 * np.arange(8), 49))


def test_align_to_key_frames_examples():
    keys = np.array([0, 10, 20, 30])
    assert align_to_key_frames(np.array([0, 4, 5, 6, 14, 15, 16, 25]), keys, 25).tolist() == [
        0, 0, 0, 10, 10, 10, 20, 20]  # a tie goes to the earlier key; 30 does not fit
    assert align_to_key_frames(np.array([7]), np.array([12]), 10).tolist() == [7]  # none fits


def test_clip_normalisation_is_the_one_open_clip_gives_the_default_weights():
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from kiclip.config import ModelConfig

    assert (CLIP_MEAN, CLIP_STD) == (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    openai = open_clip.get_pretrained_cfg(ModelConfig().model_name, "openai")
    assert (tuple(openai["mean"]), tuple(openai["std"])) == (CLIP_MEAN, CLIP_STD)
