"""Run-directory checkpoint files: atomic writes and starting over with --no-resume."""

from __future__ import annotations

import pytest
import torch

from kiclip.train import checkpoint as ckpt
from kiclip.weights import load_weights


def _fake_complete_epoch(run_dir, epoch):
    (ckpt.ds_dir(run_dir) / ckpt.epoch_tag(epoch)).mkdir(parents=True)
    ckpt.atomic_torch_save({"model": {"w": torch.ones(2)}, "config": {}, "epoch": epoch, "step": 1},
                           ckpt.weights_path(run_dir, epoch))
    ckpt.mark_complete(run_dir, epoch)


def test_discard_removes_every_resumable_epoch(tmp_path):
    _fake_complete_epoch(tmp_path, 0)
    _fake_complete_epoch(tmp_path, 3)
    assert ckpt.last_complete_epoch(tmp_path) == 3
    assert ckpt.discard_checkpoints(tmp_path) is True
    assert ckpt.last_complete_epoch(tmp_path) is None
    assert ckpt.epoch_weight_files(tmp_path) == {}
    assert ckpt.discard_checkpoints(tmp_path) is False  # nothing left to remove


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    target = tmp_path / "weights" / "epoch_000.pt"
    with pytest.raises(RuntimeError):
        ckpt.atomic_torch_save({"model": Unpicklable()}, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file was removed too


def test_load_weights_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="epoch_009.pt"):
        load_weights(tmp_path / "epoch_009.pt")
    torch.save({"not_model": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_weights(tmp_path / "other.pt")


def test_load_weights_says_what_a_non_checkpoint_is(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not a weights file"):
        load_weights(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pt is an empty file \(0 bytes\)"):
        load_weights(tmp_path / "empty.pt")
    (tmp_path / "config.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="config.json is not a PyTorch weights file"):
        load_weights(tmp_path / "config.json")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 a zip that ends here")
    with pytest.raises(ValueError, match="cut.pt is a damaged or unsupported PyTorch file"):
        load_weights(tmp_path / "cut.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a kiclip weights file: no 'model' entry "
                                         r"\(it holds a list"):
        load_weights(tmp_path / "list.pt")
