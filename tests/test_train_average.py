"""launch/average_weights.py: the element-wise mean of the chosen epochs (docs/model.md §6)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
import average_weights

from kiclip.train import checkpoint as ckpt


def _fake_run(run_dir: Path, epochs: int) -> list[dict]:
    """weights/epoch_NNN.pt as train.py writes them, with distinct random tensors per epoch."""
    states = []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        state = {"student.w": torch.randn(4, 3, generator=gen),
                 "student.frozen": torch.ones(2),  # the KI copy: equal in every epoch
                 "loss.proj": torch.randn(5, generator=gen),
                 "counter": torch.tensor(epoch)}  # not a float: taken from the last epoch
        ckpt.atomic_torch_save({"model": state, "config": {"epoch_tag": epoch}, "epoch": epoch,
                                "step": 10 * (epoch + 1)}, ckpt.weights_path(run_dir, epoch))
        states.append(state)
    return states


def _averaged(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_two_epochs_average_to_their_mean(tmp_path):
    states = _fake_run(tmp_path, 2)
    assert average_weights.main([str(tmp_path), "--from", "1"]) == 0
    out = _averaged(tmp_path / "averaged.pt")
    assert out["averaged_epochs"] == [1, 2] and out["epoch"] == 1 and out["step"] == 20
    for key in ("student.w", "loss.proj"):
        torch.testing.assert_close(out["model"][key], (states[0][key] + states[1][key]) / 2,
                                   rtol=0, atol=1e-7)
    assert torch.equal(out["model"]["student.frozen"], torch.ones(2))
    assert int(out["model"]["counter"]) == 1
    assert out["config"] == {"epoch_tag": 1}  # the config travels, evaluate.py reads it


def test_default_range_is_epoch_2_to_last(tmp_path):
    states = _fake_run(tmp_path, 4)
    assert average_weights.main([str(tmp_path)]) == 0
    out = _averaged(tmp_path / "averaged.pt")
    assert out["averaged_epochs"] == [2, 3, 4]
    torch.testing.assert_close(out["model"]["student.w"],
                               sum(s["student.w"] for s in states[1:]) / 3, rtol=0, atol=1e-6)
    assert average_weights.main([str(tmp_path), "--from", "2", "--to", "3",
                                 "--out", str(tmp_path / "two_three.pt")]) == 0
    assert _averaged(tmp_path / "two_three.pt")["averaged_epochs"] == [2, 3]


@pytest.mark.parametrize("first, expected", [(2, [1]), (7, [1])])
def test_from_is_clipped_to_a_short_run(tmp_path, first, expected):
    states = _fake_run(tmp_path, 1)
    assert average_weights.main([str(tmp_path), "--from", str(first)]) == 0
    out = _averaged(tmp_path / "averaged.pt")
    assert out["averaged_epochs"] == expected
    assert torch.equal(out["model"]["student.w"], states[0]["student.w"])


def test_clipping_to_the_last_epoch_of_a_longer_run(tmp_path):
    states = _fake_run(tmp_path, 3)
    assert average_weights.main([str(tmp_path), "--from", "9"]) == 0
    out = _averaged(tmp_path / "averaged.pt")
    assert out["averaged_epochs"] == [3]
    assert torch.equal(out["model"]["student.w"], states[2]["student.w"])


def test_errors_exit_2(tmp_path, capsys):
    assert average_weights.main([str(tmp_path)]) == 2
    assert "holds no weights/epoch_*.pt" in capsys.readouterr().err
    _fake_run(tmp_path, 2)
    assert average_weights.main([str(tmp_path), "--from", "1", "--to", "0"]) == 2
    assert "no epochs in" in capsys.readouterr().err
