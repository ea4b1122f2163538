"""The packet index (kiclip.packets): what it records, and the decodes that use it."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from kiclip.data.dali_loader import pack_needed_frames
from kiclip.data.decode import decode_clip, decode_frames
from kiclip.packets import (
    build_packet_index,
    decode_packet_index,
    encode_packet_index,
    needed_packets,
    sample_packet_index,
)

GOP = 8


def write_gop_video(path: Path, frames: int = 40, gop: int = GOP, codec: str = "libvpx-vp9",
                    container: str = "webm", pix_fmt: str = "yuv420p") -> bytes:
    """``frames`` frames of 48×32 noise with a moving bar, a key frame every ``gop`` frames."""
    with av.open(str(path), "w", format=container) as out:
        options = {"g": str(gop), "keyint_min": str(gop)}
        if codec.startswith("libvpx"):
            options |= {"deadline": "realtime", "cpu-used": "8"}
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 48, 32, pix_fmt
        rng = np.random.default_rng(0)
        for i in range(frames):
            image = rng.integers(0, 60, (32, 48, 3), dtype=np.uint8)
            image[:, (i * 3) % 44:(i * 3) % 44 + 4] = 230
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path.read_bytes()


def frames_through_key_runs(frames, gop: int) -> int:
    """Frames a decoder must produce for ``frames`` when it starts at each one's key frame."""
    covered: set[int] = set()
    for f in set(np.asarray(frames).ravel().tolist()):
        covered.update(range(f - f % gop, f + 1))
    return len(covered)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("packets")
    return {"vp9": write_gop_video(root / "a.webm"),
            "vp8": write_gop_video(root / "b.webm", codec="libvpx"),
            "mjpeg": write_gop_video(root / "c.avi", codec="mjpeg", container="avi",
                                     pix_fmt="yuvj420p"),
            "h264": write_gop_video(root / "d.mp4", codec="libx264", container="mp4")}


def _demuxed(video: bytes) -> list[tuple[bytes, bool]]:
    with av.open(io.BytesIO(video)) as container:
        return [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]


@pytest.mark.parametrize("codec", ["vp9", "vp8", "mjpeg"])
def test_index_round_trips_and_points_at_every_packet(videos, codec):
    video = videos[codec]
    index = build_packet_index(video)
    assert index is not None and len(index) == 40
    text = encode_packet_index(index)
    back = sample_packet_index({"packets": text, "codec": codec, "frames": 40}, len(video))
    assert back is not None and back.tobytes() == index.tobytes()
    got = [(video[o:o + s], bool(k)) for o, s, k in zip(index["offset"], index["size"],
                                                        index["key"])]
    assert got == _demuxed(video)


def test_no_index_for_reordering_codecs_or_garbage(videos):
    assert build_packet_index(videos["h264"]) is None  # needs extradata, may reorder
    assert build_packet_index(b"not a video") is None


def test_an_index_that_does_not_fit_the_video_is_ignored(videos):
    video = videos["vp9"]
    index = build_packet_index(video)
    text = encode_packet_index(index)
    last_end = int(index["offset"][-1]) + int(index["size"][-1])
    assert decode_packet_index(text, len(video), frames=41) is None  # wrong frame count
    assert decode_packet_index(text, last_end, frames=40) is not None
    assert decode_packet_index(text, last_end - 1, frames=40) is None  # runs past the end
    assert decode_packet_index("%%%", len(video), frames=40) is None
    assert sample_packet_index({"codec": "vp9", "frames": 40}, len(video)) is None  # old shard
    assert sample_packet_index({"packets": text, "codec": "h264", "frames": 40}, len(video)) \
        is None


def test_needed_packets_runs_from_each_key_frame():
    keys = np.arange(40) % GOP == 0
    wanted = np.array([[27, 3, 3], [11, 12, 39]])
    selected, positions = needed_packets(keys, wanted)
    assert selected.tolist() == [*range(0, 4), *range(8, 13), *range(24, 28), *range(32, 40)]
    assert len(selected) == frames_through_key_runs(wanted, GOP) == 21
    assert (selected[positions] == wanted.ravel()).all()


@pytest.mark.parametrize("codec", ["vp9", "vp8", "mjpeg"])
@pytest.mark.parametrize("rotation", [0, 90])
def test_indexed_decode_gives_the_full_decodes_frames(videos, codec, rotation):
    video = videos[codec]
    index = build_packet_index(video)
    wanted = np.array([[27, 3, 3, 11], [12, 39, 0, 20]])
    frames, decoded = decode_clip(video, wanted, rotation, packets=index, codec=codec)
    full, full_decoded = decode_clip(video, wanted, rotation)
    assert np.array_equal(frames, full) and frames.shape == wanted.shape + full.shape[2:]
    assert full_decoded == 40  # without an index: up to the last wanted frame
    assert decoded == (len(np.unique(wanted)) if codec == "mjpeg"
                       else frames_through_key_runs(wanted, GOP))
    assert np.array_equal(decode_frames(video, wanted, rotation), full)


def test_indexed_decode_of_a_broken_stream_fails_like_a_full_decode(videos):
    from kiclip.data.decode import DecodeError

    video = videos["vp9"]
    index = build_packet_index(video)
    broken = video[:int(index["offset"][0])] + bytes(len(video) - int(index["offset"][0]))
    with pytest.raises(DecodeError):
        decode_clip(broken, np.array([5]), 0, packets=index, codec="vp9")


def test_dali_repack_from_the_index_equals_the_demuxed_repack(videos):
    video = videos["vp9"]
    index = build_packet_index(video)
    wanted = np.array([3, 11, 12, 27, 39])
    demuxed = pack_needed_frames(video, wanted, 40)
    indexed = pack_needed_frames(video, wanted, 40, index=index, codec="vp9",
                                 coded_size=(48, 32))
    assert demuxed is not None and indexed is not None
    assert indexed[0] == demuxed[0] and np.array_equal(indexed[1], demuxed[1])
