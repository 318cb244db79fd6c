"""The command line's own surface: help text and exit statuses."""

from __future__ import annotations

import pytest

from tfcseg.cli import COMMANDS, main


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help_shows_no_value_hint_on_flags(command, capsys):
    assert main(command + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--help" in out and "<bool>" not in out
    if command == ["export"]:
        assert "Default: the model shipped" not in out  # its checkpoint is required
    if command == ["train"]:
        assert "--no-progress" in out and "--resume" in out


def test_a_flag_given_a_value_is_refused_in_one_line(capsys):
    assert main(["export", "x", "-o", "y", "--overwrite=yes"]) == 2
    assert "does not take a value" in capsys.readouterr().err
