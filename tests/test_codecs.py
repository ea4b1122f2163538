"""Which loader backend reads the shards: the decision from the decoders' answers (mocked, so a
CPU host can test what a GPU would say), the once-per-process query, and the CLI failures."""
from __future__ import annotations

import logging

import pytest

from kiclip.data import codecs
from kiclip.data.codecs import DaliNotInstalledError, UnsupportedCodecError, choose_backend


def decide(requested, shard_codecs, device, *, gpu=(), cpu=("vp8", "vp9", "mjpeg"),
           pyav=("h264", "hevc", "vp9", "mjpeg", "vp8"), dali=True):
    """choose_backend with DALI answering from the ``gpu``/``cpu`` tables."""
    readable = {"cuda": set(gpu), "cpu": set(cpu)}
    asked = []

    def dali_reads(codec, dev):
        asked.append((codec, dev))
        return codec in readable[dev]

    choice = choose_backend(requested, shard_codecs, device, dali_installed=dali,
                            dali_reads=dali_reads, pyav_reads=lambda c: c in pyav,
                            where="shards/k400/train")
    return choice, asked


def test_gpu_that_reads_the_codec_decodes_it():
    choice, _ = decide("auto", ["h264"], "cuda", gpu=("h264", "mjpeg"))
    assert (choice.name, choice.decode_device) == ("dali-gpu", "cuda")


def test_gpu_without_mjpeg_decodes_mjpeg_with_dali_on_the_cpu():
    for requested in ("auto", "dali"):
        choice, asked = decide(requested, ["mjpeg"], "cuda", gpu=("h264", "hevc"))
        assert choice.name == "dali-cpu" and choice.backend == "dali"
        assert asked == [("mjpeg", "cuda"), ("mjpeg", "cpu")]
        assert "NVDEC no mjpeg" in choice.reason and "DALI CPU reads all" in choice.reason


def test_codecs_split_between_gpu_and_cpu_fall_back_to_pyav():
    # NVDEC reads the h264 videos but not the mjpeg ones, DALI's CPU decoder the reverse: no one
    # DALI device reads the whole set, so auto takes the fallback and dali is refused.
    choice, _ = decide("auto", ["h264", "mjpeg"], "cuda", gpu=("h264",))
    assert choice.name == "torch" and choice.decode_device is None
    with pytest.raises(UnsupportedCodecError, match="NVDEC no mjpeg; DALI CPU no h264"):
        decide("dali", ["h264", "mjpeg"], "cuda", gpu=("h264",))


def test_h264_on_a_cpu_host():
    choice, asked = decide("auto", ["h264"], "cpu")
    assert choice.name == "torch" and asked == [("h264", "cpu")]
    with pytest.raises(UnsupportedCodecError) as err:
        decide("dali", ["h264"], "cpu")
    message = str(err.value)
    assert "shards/k400/train" in message and "h264" in message
    assert "--transcode vp9" in message and "GPU" in message and "--loader torch" in message


def test_a_codec_nothing_reads_names_it_and_the_fix():
    for requested in ("auto", "torch"):
        with pytest.raises(UnsupportedCodecError) as err:
            decide(requested, ["vp9", "prores"], "cuda", gpu=("vp9",), pyav=("vp9",))
        assert "prores" in str(err.value) and "--transcode vp9" in str(err.value)
        assert "shards/k400/train" in str(err.value)


def test_without_dali():
    choice, asked = decide("auto", ["vp9"], "cpu", dali=False)
    assert choice.name == "torch" and asked == []
    with pytest.raises(DaliNotInstalledError) as err:
        decide("dali", ["vp9"], "cpu", dali=False)
    assert "pip install -e '.[dali]'" in str(err.value) and "--loader torch" in str(err.value)
    choice, asked = decide("torch", ["vp9"], "cuda", gpu=("vp9",))
    assert choice.name == "torch" and asked == []  # the fallback was asked for


def test_dali_is_asked_once_per_codec_and_device(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(codecs, "_DALI_ANSWERS", {})
    monkeypatch.setattr(codecs, "dali_try_decode",
                        lambda video, device: calls.append((video, device)) or device == "cpu")
    sample = tmp_path / "x.tar"
    sample.write_bytes(b"0123456789")
    ref = codecs.SampleRef(tar=str(sample), key="k", video=(2, 3), meta=(0, 0))
    for _ in range(3):
        assert not codecs.dali_decodes("mjpeg", ref, "cuda")
        assert codecs.dali_decodes("mjpeg", ref, "cpu")
    assert calls == [(b"234", "cuda"), (b"234", "cpu")]


def test_pyav_knows_its_decoders():
    assert codecs.pyav_decodes("h264") and codecs.pyav_decodes("mjpeg")
    assert not codecs.pyav_decodes("no-such-codec")


@pytest.mark.dali
def test_build_loader_asks_dali_with_a_real_sample(tmp_path, monkeypatch, caplog):
    """The query path end to end on the CPU, with "cuda" answered by a stand-in GPU that has no
    JPEG decoder (the CPU answer is DALI's own)."""
    pytest.importorskip("nvidia.dali")
    from test_loaders import make_tiny_shards

    from kiclip.data import choose_loader_backend, open_shards

    shards = make_tiny_shards(tmp_path, codec="mjpeg", per_shard=48)
    real = codecs.dali_try_decode
    asked = []

    def no_jpeg_gpu(video, device):
        asked.append(device)
        return False if device == "cuda" else real(video, device)

    monkeypatch.setattr(codecs, "_DALI_ANSWERS", {})
    monkeypatch.setattr(codecs, "dali_try_decode", no_jpeg_gpu)
    with caplog.at_level(logging.INFO, logger="kiclip.data"):
        choice = choose_loader_backend(open_shards(shards), "auto", "cuda", str(shards))
    assert choice.name == "dali-cpu" and asked == ["cuda", "cpu"]
    lines = [r.getMessage() for r in caplog.records if "loader backend" in r.getMessage()]
    assert len(lines) == 1 and "dali-cpu" in lines[0] and "mjpeg" in lines[0]
