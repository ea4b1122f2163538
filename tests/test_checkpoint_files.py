"""Run-directory checkpoint files: atomic writes, starting over with --no-resume, and the
checkpoint contract (save_checkpoint / load_checkpoint of the run's Stateful parts)."""

from __future__ import annotations

import copy
from pathlib import Path

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


class _FakeEngine:
    """The part of a DeepSpeed engine the checkpoint functions use: its own state is its
    module's weights, saved with the client state under (folder, tag)."""

    def __init__(self, module):
        self.module, self.saved = module, {}

    def bfloat16_enabled(self):
        return False

    def save_checkpoint(self, folder, tag, client_state):
        path = Path(folder) / tag
        path.mkdir(parents=True, exist_ok=True)
        self.saved[(folder, tag)] = (copy.deepcopy(self.module.state_dict()), copy.deepcopy(client_state))

    def load_checkpoint(self, folder, tag):
        weights, client = self.saved[(folder, tag)]
        self.module.load_state_dict(weights)
        return str(Path(folder) / tag), copy.deepcopy(client)


def test_save_then_load_checkpoint_restores_every_stateful_part(tmp_path):
    from kiclip.text import TemplateSampler

    torch.manual_seed(0)
    engine = _FakeEngine(torch.nn.Linear(3, 2))
    sampler, progress = TemplateSampler(seed=3), ckpt.TrainProgress(epoch=4, step=40)
    sampler.draw()
    stateful = {"rng": ckpt.RngState(), "templates": sampler, "progress": progress}
    ckpt.save_checkpoint(engine, tmp_path, 4, stateful, config={"seed": 1}, step=40)
    assert ckpt.last_complete_epoch(tmp_path) == 4  # DeepSpeed state, weights file, COMPLETE
    written = load_weights(ckpt.weights_path(tmp_path, 4))
    assert written["step"] == 40 and written["epoch"] == 4 and written["config"] == {"seed": 1}
    torch.testing.assert_close(written["model"]["weight"], engine.module.weight.detach())
    expected = (torch.rand(2), [sampler.draw() for _ in range(4)], engine.module.weight.clone())

    with torch.no_grad():
        engine.module.weight.zero_()
    fresh_sampler, fresh_progress = TemplateSampler(seed=3), ckpt.TrainProgress()
    ckpt.load_checkpoint(engine, tmp_path, 4, {"rng": ckpt.RngState(), "templates": fresh_sampler,
                                               "progress": fresh_progress})
    assert fresh_progress == ckpt.TrainProgress(epoch=4, step=40)
    assert torch.equal(torch.rand(2), expected[0])
    assert [fresh_sampler.draw() for _ in range(4)] == expected[1]
    assert torch.equal(engine.module.weight, expected[2])


def test_load_checkpoint_reads_the_older_flat_client_state(tmp_path):
    """Checkpoints written before TrainProgress kept "step" and "epoch" at the top level."""
    engine = _FakeEngine(torch.nn.Linear(2, 2))
    folder, tag = str(ckpt.ds_dir(tmp_path)), ckpt.epoch_tag(1)
    engine.saved[(folder, tag)] = (engine.module.state_dict(), {"step": 12, "epoch": 1})
    progress = ckpt.TrainProgress()
    ckpt.load_checkpoint(engine, tmp_path, 1, {"progress": progress})
    assert progress == ckpt.TrainProgress(epoch=1, step=12)


def test_load_checkpoint_names_a_missing_part(tmp_path):
    engine = _FakeEngine(torch.nn.Linear(2, 2))
    engine.saved[(str(ckpt.ds_dir(tmp_path)), ckpt.epoch_tag(0))] = (engine.module.state_dict(), {"rng": {}})
    with pytest.raises(ValueError, match=r"epoch_000 holds no templates state \(it has: rng\)"):
        ckpt.load_checkpoint(engine, tmp_path, 0, {"templates": _NeverLoaded()})


class _NeverLoaded:
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        raise AssertionError("not reached")
