"""The agents' CLI commands are registered and run end to end (tiny budgets)."""

from __future__ import annotations

import torch

from sage.cli import main
from sage.training.encoder import load_pretrained

torch.set_num_threads(1)


def test_train_encoder_command_is_deterministic(tmp_path):
    args = ["train", "encoder", "--synthetic-bars", "20000", "--seed", "3", "--steps", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    _, _, ma = load_pretrained(tmp_path / "a")
    _, _, mb = load_pretrained(tmp_path / "b")
    assert ma.weights_sha256 == mb.weights_sha256
    assert "--steps 5" in ma.training["command"]
    assert ma.training["config"]["data"]["seed"] == 3


def test_commands_registered(capsys):
    for argv in (["train", "agents", "--help"], ["evaluate", "agents", "--help"]):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0
    out = capsys.readouterr().out
    assert "--synthetic-bars" in out and "--catalog" in out


def test_missing_bar_type_is_a_user_error(tmp_path, capsys):
    code = main(["train", "agents", "--catalog", str(tmp_path), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "bar-type" in capsys.readouterr().out
