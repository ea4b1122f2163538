"""The VP8/VP9 packet re-pack that lets DALI skip frames a clip does not need."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from kiclip.data.dali_loader import pack_needed_frames


def _decode_all(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def vp9_video(tmp_path_factory) -> bytes:
    """40 frames of VP9 with a key frame every 8 frames, each frame visibly different."""
    path = tmp_path_factory.mktemp("repack") / "clip.webm"
    with av.open(str(path), "w", format="webm") as out:
        options = {"g": "8", "keyint_min": "8", "deadline": "realtime", "cpu-used": "8"}
        stream = out.add_stream("libvpx-vp9", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(40):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            image[:, (i * 3) % 28:(i * 3) % 28 + 4] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def test_repacked_frames_are_bit_identical(vp9_video):
    original = _decode_all(vp9_video)
    wanted = np.array([3, 11, 12, 27, 39])
    packed = pack_needed_frames(vp9_video, wanted, total_frames=len(original))
    assert packed is not None, "a 40-frame VP9 stream with 5 key frames should be re-packed"
    data, positions = packed
    repacked = _decode_all(data)
    assert len(repacked) < len(original)  # frames before the needed key frames were dropped
    for frame, pos in zip(wanted, positions):
        assert np.array_equal(repacked[int(pos)], original[int(frame)])


def test_frames_out_of_order_and_repeated_map_back(vp9_video):
    original = _decode_all(vp9_video)
    wanted = np.array([[20, 5, 5], [39, 39, 0]])  # clamped clips repeat the last frame
    data, positions = pack_needed_frames(vp9_video, wanted, total_frames=len(original))
    assert positions.shape == (wanted.size,)  # flat, in the order of wanted.ravel()
    repacked = _decode_all(data)
    for frame, pos in zip(wanted.ravel(), positions):
        assert np.array_equal(repacked[int(pos)], original[int(frame)])


def test_other_codecs_and_mismatched_counts_are_left_alone(vp9_video, make_video, tmp_path):
    mjpeg = make_video(tmp_path / "m.avi", frames=8, codec="mjpeg", container="avi",
                       pix_fmt="yuvj420p").read_bytes()
    assert pack_needed_frames(mjpeg, np.array([1, 2]), total_frames=8) is None
    assert pack_needed_frames(vp9_video, np.array([1]), total_frames=41) is None
    assert pack_needed_frames(b"not a video", np.array([0]), total_frames=1) is None
