"""launch/visualize.py and kiclip.eigencam: the EigenCAM math, the layer taps, the PNG grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from kiclip.eigencam import (
    LayerTaps,
    SignCorrectedEigenCAM,
    default_layers,
    first_pc_projection,
    injection_disabled,
    parse_layers,
    vit_tokens_to_grid,
)
from kiclip.inference import load_checkpoint_model, load_video_clips

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import visualize  # noqa: E402
from test_predict import save_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from conftest import write_test_video

    root = tmp_path_factory.mktemp("visualize")
    checkpoint = save_tiny_checkpoint(root / "tiny.pt", perturb=0.05)
    video = write_test_video(root / "clip.mp4", frames=30, width=40, height=32)
    return {"checkpoint": checkpoint, "video": video, "root": root}


def known_activations() -> tuple[np.ndarray, np.ndarray]:
    """Activations (1, C=3, 2, 3) whose centred tokens are rank 1: token p = mean + u_p · v.
    Their first-PC projection is u_p · |v| with the largest-magnitude entry positive."""
    u = np.array([3.0, -1.0, 0.5, -0.5, -1.0, -1.0])  # zero mean over the 6 positions
    v = np.array([2.0, -1.0, 2.0])  # |v| = 3
    mean = np.array([5.0, 1.0, -2.0])
    tokens = mean[None, :] + u[:, None] * v[None, :]  # (6 positions, 3 channels)
    activations = tokens.T.reshape(1, 3, 2, 3).astype(np.float32)
    return activations, (3.0 * u).reshape(1, 2, 3)


def test_first_pc_projection_on_known_tensor():
    activations, expected = known_activations()
    np.testing.assert_allclose(first_pc_projection(activations), expected, atol=1e-4)
    # Flipping the data's sign does not flip the (sign-corrected) map's salient region.
    np.testing.assert_allclose(first_pc_projection(-activations), expected, atol=1e-4)


def test_eigencam_package_path_equals_first_pc():
    """pytorch_grad_cam's pipeline through our hook point: ReLU + min-max of the projection."""
    activations, expected = known_activations()

    class Emit(nn.Module):
        def __init__(self):
            super().__init__()
            self.tap = nn.Identity()
            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.tap(torch.from_numpy(activations).expand(x.shape[0], -1, -1, -1)).flatten(1)

    model = Emit()
    with SignCorrectedEigenCAM(model, [model.tap]) as cam:
        got = cam(input_tensor=torch.zeros(1, 3, 2, 3), targets=None)
    relu = np.maximum(expected, 0)
    want = (relu - relu.min()) / (relu.max() - relu.min())
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_vit_reshape_drops_cls():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    grid = vit_tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[1, :, 0, 1], tokens[1, 2])


def test_layer_taps_match_the_student(assets):
    model = load_checkpoint_model(assets["checkpoint"])
    clip = torch.randn(3, model.cfg.data.num_frames, 32, 32)
    with torch.no_grad():
        want = model.student.encode_frames(clip[None])[0]
        got = LayerTaps(model.student)(clip.transpose(0, 1))
    torch.testing.assert_close(got, want)
    with injection_disabled(model.student):
        assert model.student.injection is False
    assert model.student.injection is True


def test_layer_selection():
    assert default_layers(12) == [6, 7, 8, 9, 10, 11, 12]
    assert default_layers(4) == [1, 2, 3, 4]  # kiclip-tiny: nothing after the 5th
    assert parse_layers("6-8,12", 12) == [6, 7, 8, 12]
    with pytest.raises(ValueError):
        parse_layers("0-3", 4)
    with pytest.raises(ValueError):
        parse_layers("x", 4)


def test_grid_png_with_and_without_ki(assets):
    model = load_checkpoint_model(assets["checkpoint"])
    out = assets["root"] / "grid.png"
    maps, layers = visualize.visualize(model, str(assets["video"]), out)
    num_layers = len(model.student.clip.visual.transformer.resblocks)
    assert layers == list(range(1, num_layers + 1))
    assert maps.shape == (2, num_layers, 32, 32)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    assert not np.allclose(maps[0], maps[1], atol=1e-3)  # KI changes what the layers attend to
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == visualize.grid_pixel_size(2, num_layers)


def test_cli_layers_and_errors(assets, capsys):
    out = assets["root"] / "two.png"
    code = visualize.main(["--checkpoint", str(assets["checkpoint"]), "--video", str(assets["video"]),
                           "--layers", "2-3", "--frame", "0", "--out", str(out)])
    assert code == 0
    with Image.open(out) as image:
        assert image.size == visualize.grid_pixel_size(2, 2)
    assert visualize.main(["--checkpoint", str(assets["checkpoint"]), "--video",
                           str(assets["root"] / "missing.mp4")]) == 2
    assert visualize.main(["--checkpoint", str(assets["checkpoint"]), "--video", str(assets["video"]),
                           "--layers", "9"]) == 2
    assert "--layers must name layers in 1..4" in capsys.readouterr().err


def test_clip_is_the_centre_view(assets):
    model = load_checkpoint_model(assets["checkpoint"])
    clips, frames = load_video_clips(assets["video"], model.clip_spec(views=1))
    assert clips.shape == (1, 3, 8, 32, 32)
    span = (8 - 1) * model.cfg.data.stride
    assert int(frames[0, 0]) == (30 - 1 - span) // 2


def test_cli_names_what_is_wrong_with_checkpoint_and_video(assets, capsys):
    not_weights = assets["root"] / "config.json"
    not_weights.write_text('{"model": {}}')
    assert visualize.main(["--checkpoint", str(not_weights), "--video", str(assets["video"])]) == 1
    assert "is not a PyTorch weights file" in capsys.readouterr().err
    folder = assets["root"] / "a_folder.mp4"
    folder.mkdir(exist_ok=True)
    assert visualize.main(["--checkpoint", str(assets["checkpoint"]), "--video", str(folder)]) == 2
    assert "a_folder.mp4 is a directory, not a file" in capsys.readouterr().err
