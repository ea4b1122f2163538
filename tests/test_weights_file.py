"""kiclip.weights: one description of a bad --checkpoint, given before torch loads and again
by the reader, so the CLIs' early check and load_weights cannot drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiclip.weights import WEIGHTS_HINT, load_weights, student_state, weights_file_problem

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("case, error", [("missing", FileNotFoundError), ("directory", ValueError),
                                         ("empty", ValueError)])
def test_early_check_and_reader_say_the_same(tmp_path, case, error):
    path = tmp_path / "epoch_000.pt"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    problem = weights_file_problem(path)
    assert problem and str(path) in problem
    with pytest.raises(error) as raised:
        load_weights(path)
    assert str(raised.value) == problem
    assert (WEIGHTS_HINT in problem) == (case != "empty")


def test_the_early_check_does_not_import_torch(tmp_path):
    probe = ("import sys\nfrom kiclip.weights import weights_file_problem\n"
             f"print(weights_file_problem({str(tmp_path / 'nope.pt')!r}))\n"
             "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False" and "nope.pt does not exist" in lines[0], done.stdout + done.stderr


def test_student_state_keeps_only_the_student():
    blob = {"model": {"student.clip.w": 1, "student.frozen_blocks.0.b": 2, "loss.image.w": 3}}
    assert student_state(blob) == {"clip.w": 1, "frozen_blocks.0.b": 2}
