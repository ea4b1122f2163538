"""A video's packet index: where each frame's encoded bytes are, so a clip needs no demuxer.

make_shards records it in the sample json as ``"packets"``: base64 of a little-endian array of
:data:`PACKET_DTYPE` records, one per frame in display order — ``offset`` and ``size`` of the
frame's packet inside the video member's bytes, and ``key`` (1 for a key frame). It is written
only for codecs whose packets decode on their own from the previous key frame, in display
order, one packet per frame (:data:`INDEXED_CODECS`); other samples, and shards made before the
index existed, have no ``"packets"`` and are read by demuxing as before.

With the index, the frames a clip needs are a slice-and-concatenate of the video bytes
(:func:`needed_packets`, :func:`slice_packets`): DALI re-packs them into an IVF stream and the
fallback loader feeds them to a bare decoder.
"""
from __future__ import annotations

import base64
import io

import av
import numpy as np

PACKET_DTYPE = np.dtype([("offset", "<u4"), ("size", "<u4"), ("key", "u1")])

# Codecs (PyAV names) whose packets need no container to decode (no extradata), are stored in
# display order, and whose key frames reset every reference: a run of packets from a key frame
# decodes to exactly the frames a full decode gives.
INDEXED_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


def build_packet_index(video: bytes) -> np.ndarray | None:
    """The packet index of ``video`` (one :data:`PACKET_DTYPE` row per frame), or None.

    None when the codec is not in :data:`INDEXED_CODECS`, the stream does not demux, packets are
    not in display order, the first packet is not a key frame, or a packet's bytes are not
    stored contiguously in ``video`` (e.g. a container that compresses or splits them).
    """
    rows: list[tuple[int, int, int]] = []
    try:
        with av.open(io.BytesIO(video)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.name not in INDEXED_CODECS:
                return None
            last_pts, cursor = None, 0
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is not None and last_pts is not None and packet.pts <= last_pts:
                    return None  # reordered: row order would not be display order
                last_pts = packet.pts
                offset = _locate(video, bytes(packet), packet.pos, cursor)
                if offset is None:
                    return None
                rows.append((offset, packet.size, int(packet.is_keyframe)))
                cursor = offset + packet.size
    except (av.FFmpegError, ValueError, IndexError, OSError):
        return None
    if not rows or not rows[0][2] or len(video) >= 2**32:
        return None
    return np.array(rows, dtype=PACKET_DTYPE)


def _locate(video: bytes, data: bytes, pos: int | None, cursor: int) -> int | None:
    """Byte offset of ``data`` in ``video`` at or after ``cursor``; the demuxer's ``pos`` is
    where its container block starts, a few header bytes before the payload."""
    start = max(cursor, pos or 0) if pos is not None and pos >= 0 else cursor
    offset = video.find(data, start)
    if offset < 0 and start > cursor:
        offset = video.find(data, cursor)
    return offset if offset >= 0 else None


def encode_packet_index(index: np.ndarray) -> str:
    """The index as the json's ``"packets"`` string (base64 of the little-endian records)."""
    return base64.b64encode(np.ascontiguousarray(index, PACKET_DTYPE).tobytes()).decode("ascii")


def decode_packet_index(text: str, video_size: int, frames: int) -> np.ndarray | None:
    """A json ``"packets"`` string → the index, or None when it does not fit this video
    (``frames`` rows, packets inside ``video_size`` bytes, first packet a key frame); the
    caller then demuxes, so a damaged index costs speed, never wrong frames."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) != frames * PACKET_DTYPE.itemsize or frames == 0:
        return None
    index = np.frombuffer(raw, PACKET_DTYPE)
    ends = index["offset"].astype(np.int64) + index["size"]
    if not index["key"][0] or ends.max() > video_size or (index["size"] == 0).any():
        return None
    return index


def sample_packet_index(meta: dict, video_size: int) -> np.ndarray | None:
    """The index recorded in a sample's json, if any and consistent (see above)."""
    text = meta.get("packets")
    if not isinstance(text, str) or str(meta.get("codec")) not in INDEXED_CODECS:
        return None
    return decode_packet_index(text, video_size, int(meta["frames"]))


def key_frame_indices(index: np.ndarray | None) -> np.ndarray | None:
    """Sorted frame indices of the key frames of a packet index (None for None)."""
    return None if index is None else np.flatnonzero(index["key"]).astype(np.int64)


def needed_packets(keys: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which packets decoding ``frames`` needs, and where each frame lands among them.

    ``keys[i]`` is true when packet i is a key frame (``keys[0]`` must be). Each wanted frame
    needs the packets from its preceding key frame — or from the previous wanted frame of the
    same GOP — up to itself. Returns ``(selected, positions)``: ``selected`` the packet numbers
    in decode order (no repeats), ``positions[i]`` the place in ``selected`` of
    ``frames.ravel()[i]``. ``len(selected)`` is the number of frames a decoder produces.
    """
    flat = np.asarray(frames, np.int64).reshape(-1)
    key_at = np.flatnonzero(np.asarray(keys))
    selected: list[int] = []
    position: dict[int, int] = {}
    for f in sorted(set(flat.tolist())):
        key = int(key_at[np.searchsorted(key_at, f, side="right") - 1])
        first = selected[-1] + 1 if selected and selected[-1] >= key else key
        selected.extend(range(first, f + 1))
        position[f] = len(selected) - 1
    positions = np.array([position[f] for f in flat.tolist()], np.int32)
    return np.array(selected, np.int64), positions


def slice_packets(video: bytes | memoryview, index: np.ndarray,
                  selected: np.ndarray) -> list[bytes]:
    """The encoded bytes of packets ``selected`` (rows of ``index``), in that order."""
    view = memoryview(video)
    rows = index[selected]
    return [bytes(view[int(o):int(o) + int(s)]) for o, s in zip(rows["offset"], rows["size"])]
