"""The command line's shape: one way to name the release root and the splits, enumerated flags that refuse unknown
values, help on every flag, and a version."""

from __future__ import annotations

import argparse

import pytest

from bioscan5m import __version__, cli
from bioscan5m.cli.arguments import PRESET_NAMES


def every_action():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    def walk(name, sub):
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, child_parser in action.choices.items():
                    yield from walk(f"{name} {child}", child_parser)
            elif action.dest != "help":
                yield name, action

    for name, sub in commands.choices.items():
        yield from walk(name, sub)


def test_every_flag_has_help_and_every_training_preset_is_a_choice():
    assert [f"{name} {action.option_strings or action.dest}" for name, action in every_action() if not action.help] == []
    presets = {name: action.choices for name, action in every_action() if "--preset" in action.option_strings}
    assert set(presets) == {"pretrain", "finetune", "train-clip"}
    assert all(tuple(choices) == PRESET_NAMES for choices in presets.values())


def test_preset_names_are_the_training_presets():
    from bioscan5m.training.presets import PRESETS
    from bioscan5m.training.train_clibd import CLIBD_PRESETS

    assert tuple(PRESETS) == tuple(CLIBD_PRESETS) == PRESET_NAMES


def test_delimit_options_are_the_packages():
    from bioscan5m.delimitation import DENSE_LIMIT, METHODS, MIN_OVERLAP

    options = {action.dest: action for name, action in every_action() if name == "delimit"}
    assert tuple(options["method"].choices) == METHODS and options["min_overlap"].default == MIN_OVERLAP
    assert f"up to {DENSE_LIMIT:,} barcodes" in options["method"].help


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"bioscan5m {__version__}"


def test_one_name_for_a_record_cap():
    parser = cli.build_parser()
    for flag in ("--max-records", "--max-barcodes"):
        assert parser.parse_args(["pretrain", "--data", "r", "--out", "o", flag, "500"]).max_barcodes == 500


def test_release_root_as_data_or_positional_and_split_as_split_or_splits(bold_root, capsys):
    assert cli.main(["info", "--data", str(bold_root)]) == 0
    by_option = capsys.readouterr().out
    assert cli.main(["info", str(bold_root)]) == 0
    assert capsys.readouterr().out == by_option and "97,787" in by_option
    parser = cli.build_parser()
    for flag in ("--split", "--splits"):
        args = parser.parse_args(["download", "--data", "root", flag, "train+val"])
        assert args.split == "train+val"
    with pytest.raises(SystemExit) as refused:
        cli.main(["info"])
    assert refused.value.code == 2 and "the release root is missing: give --data ROOT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli.main(["info", "a", "--data", "b"])
    assert refused.value.code == 2 and "two release roots given (b and a)" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["pretrain", "--data", "r", "--out", "o", "--preset", "huge"], "invalid choice: 'huge'"),
    (["download", "r", "--package", "cropped_512"], "invalid choice: 'cropped_512'"),
    (["train-clip", "--data", "r", "--out", "o", "--config", "cropped"], None),
    (["demo", "--records", "0"], "expected a positive integer"),
    (["pretrain", "--data", "r", "--out", "o", "--max-records", "0"], "expected a positive integer"),
    (["finetune", "--model", "m", "--data", "r", "--out", "o", "--batch-size", "-8"], "expected a positive integer"),
    (["cluster", "--embeddings", "kmer", "--data", "r", "--n-clusters", "0"], "expected a positive integer"),
])
def test_enumerated_and_counted_flags_refuse_bad_values(arguments, message, capsys):
    if message is None:
        assert cli.build_parser().parse_args(arguments).config == "cropped"
        return
    with pytest.raises(SystemExit) as refused:
        cli.build_parser().parse_args(arguments)
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_step_lines_go_to_the_stderr_of_each_command(tmp_path, capsys):
    # A handler that kept the first command's stderr would write the second command's lines to a closed stream.
    for name in ("first", "second"):
        assert cli.main(["sample", str(tmp_path / name), "--records", "200", "--packages", "cropped_256"]) == 0
        captured = capsys.readouterr()
        assert "sample: drawing the cropped_256 packages' photographs of 200 records" in captured.err
        assert "Logging error" not in captured.err and f"written to {tmp_path / name}" in captured.out
