"""create_clip: configs, tokenizer, and loading weights from each supported file format."""

import warnings

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from kiclip.model import (
    DEFAULT_MODEL,
    ArchitectureMismatchError,
    VideoStudent,
    create_clip,
)
from kiclip.model.factory import _resolve_config


def tiny(seed):
    torch.manual_seed(seed)
    return create_clip("kiclip-tiny")


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], atol=0, rtol=0, msg=key)


def test_tiny_config_and_tokenizer():
    clip, tokenizer = tiny(0)
    assert isinstance(clip, open_clip.CLIP)
    assert clip.visual.transformer.resblocks[0].attn.num_heads == 4
    assert clip.visual.output_dim == 64 and clip.context_length == 32
    tokens = tokenizer(["a video of a person juggling.", "x"])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    assert clip.encode_text(tokens).shape == (2, 64)


def test_default_is_vit_b16_quickgelu():
    cfg = _resolve_config(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "ViT-B-16-quickgelu" and cfg["quick_gelu"]
    assert (cfg["vision_cfg"]["width"], cfg["vision_cfg"]["layers"], cfg["vision_cfg"]["patch_size"]) == (768, 12, 16)
    assert cfg["embed_dim"] == 512 and cfg["text_cfg"]["context_length"] == 77


def test_overrides_merge_into_nested_config():
    clip, _ = create_clip("kiclip-tiny", vision_cfg={"image_size": 48})
    assert clip.visual.image_size == (48, 48) and clip.visual.transformer.width == 96


@pytest.mark.parametrize("wrap", ["plain", "state_dict_key", "module_prefix"])
def test_loads_saved_torch_state_dict(tmp_path, wrap):
    source, _ = tiny(1)
    state = source.state_dict()
    if wrap == "state_dict_key":
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    loaded, _ = create_clip("kiclip-tiny", pretrained=str(path))
    assert_same_weights(loaded, source)


def test_loads_safetensors(tmp_path):
    source, _ = tiny(2)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded, _ = create_clip("kiclip-tiny", pretrained=path)
    assert_same_weights(loaded, source)


def test_loads_torchscript_archive(tmp_path):
    """OpenAI's release format: a TorchScript archive whose state dict has CLIP's keys."""
    source, _ = tiny(3)
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(source.eval()), str(path))
        loaded, _ = create_clip("kiclip-tiny", pretrained=str(path))
    assert_same_weights(loaded, source)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "ViT-B-16.pt"
    with pytest.raises(FileNotFoundError, match="ViT-B-16.pt"):
        create_clip("kiclip-tiny", pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="not-a-tag"):
        create_clip("kiclip-tiny", pretrained="not-a-tag")


def test_architecture_mismatch_is_named(tmp_path):
    other, _ = create_clip("kiclip-tiny", vision_cfg={"width": 48, "head_width": 24})
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ArchitectureMismatchError, match=r"other\.pt.*kiclip-tiny.*shape mismatch"):
        create_clip("kiclip-tiny", pretrained=str(path))

    partial = {k: v for k, v in other.state_dict().items() if not k.startswith("visual.")}
    torch.save(partial, path)
    with pytest.raises(ArchitectureMismatchError, match="missing"):
        create_clip("kiclip-tiny", pretrained=str(path))

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ArchitectureMismatchError, match="could not read"):
        create_clip("kiclip-tiny", pretrained=str(path))


def test_non_standard_configs_are_refused():
    with pytest.raises(ValueError, match="patch_dropout"):
        create_clip("kiclip-tiny", vision_cfg={"patch_dropout": 0.5})
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        create_clip("no-such-model")


def test_student_accepts_loaded_model(tmp_path):
    source, _ = tiny(4)
    path = tmp_path / "clip.pt"
    torch.save(source.state_dict(), path)
    clip, _ = create_clip("kiclip-tiny", pretrained=str(path))
    student = VideoStudent(clip, num_frames=2)
    assert student.encode_frames(torch.randn(1, 3, 2, 32, 32)).shape == (1, 2, 64)
