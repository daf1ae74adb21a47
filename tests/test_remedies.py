"""Engine errors name no front end's commands; they carry the remedy as data, and the CLI prints the command."""

from __future__ import annotations

import argparse
import ast
import pickle
import re
from pathlib import Path

import pytest

from bit_engine import model_choice, weights_cache
from bit_engine.cli import build_parser, main
from bit_engine.cli.remedies import commands, render_error
from bit_engine.errors import REMEDIES, BitStudioError
from bit_engine.fileio import OutputPlaceError, check_new_run_folder

ENGINE = Path(__file__).resolve().parent.parent / "bit_engine"


def _cli_flags() -> set[str]:
    """Every long option of the `bit-studio` command line, sub-commands included."""
    flags: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return flags


def _message_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a module that is not a docstring (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_engine_message_names_a_command_or_a_flag_of_the_command_line():
    flags = _cli_flags()
    assert {"--model", "--force", "--name", "--out"} <= flags  # the scan looks for the real ones
    flag_pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(flags))) + r")(?![\w-])")
    offenders = []
    modules = [p for p in ENGINE.rglob("*.py") if "cli" not in p.relative_to(ENGINE).parts]
    assert len(modules) > 30
    for path in modules:
        for line, text in _message_strings(path):
            if "bit-studio " in text or flag_pattern.search(text):
                offenders.append(f"{path.relative_to(ENGINE)}:{line}: {text!r}")
    assert offenders == []


def test_a_remedy_is_data_that_survives_a_process_boundary():
    error = weights_cache.HostUnreachableError(
        "Could not reach the host.", remedy="import", model="BiT-M-R50x1", url="https://example.invalid/x.npz"
    )
    copy = pickle.loads(pickle.dumps(error))  # training children report their errors this way
    assert (copy.remedy, copy.model, copy.url, str(copy)) == (
        "import",
        "BiT-M-R50x1",
        "https://example.invalid/x.npz",
        "Could not reach the host.",
    )
    status = pickle.loads(pickle.dumps(weights_cache.DownloadHTTPError("Gone.", 404, remedy="import")))
    assert (status.status, status.remedy) == (404, "import")
    with pytest.raises(ValueError, match="unknown remedy"):
        BitStudioError("x", remedy="reinstall")
    assert set(REMEDIES) == {"resume", "download", "import", "name_model", "offline_model", "replace"}


def test_every_remedy_has_a_command_line_rendering():
    subject = {
        "model": "BiT-M-R50x1",
        "url": "https://example.invalid/x.npz",
        "path": "w.npz",
        "run_dir": "r",
    }
    for remedy in REMEDIES:
        lines = commands(remedy, **subject)
        assert lines and all("bit-studio" in line or "--" in line for line in lines), remedy
    assert commands(None, **subject) == []


def test_the_cli_prints_the_command_of_a_wrapped_remedy_then_the_outer_one(monkeypatch):
    def unreachable(name, **kwargs):
        raise weights_cache.HostUnreachableError(
            f"Could not reach the host to download {name}.",
            remedy="import",
            model=name,
            url="https://h/x.npz",
        )

    monkeypatch.setattr(model_choice.weights_download, "download", unreachable)
    with pytest.raises(weights_cache.WeightsError) as info:
        model_choice.fetch_weights("BiT-M-R50x1")
    assert "bit-studio" not in str(info.value) and "--model" not in str(info.value)
    assert (info.value.remedy, info.value.model) == ("offline_model", model_choice.OFFLINE_MODEL)
    text = render_error(info.value)
    assert text.index("bit-studio weights import PATH/TO/BiT-M-R50x1.npz") < text.index(
        "--model EfficientNet"
    )
    assert text.endswith(f"--model {model_choice.OFFLINE_MODEL}")


def test_a_folder_holding_a_run_names_resume_as_data_and_the_cli_as_a_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(OutputPlaceError) as info:
        check_new_run_folder(run, tmp_path / "photos")
    assert "bit-studio" not in str(info.value)
    assert (info.value.remedy, info.value.run_dir) == ("resume", run)
    assert render_error(info.value).endswith(f"choose another folder: bit-studio resume {run}")


def test_cli_import_of_an_unnamed_file_prints_the_command_with_name(tmp_path, capsys):
    source = tmp_path / "weights.npz"
    source.write_bytes(b"not looked at before the name is known")
    assert main(["weights", "import", str(source)]) == 2
    err = capsys.readouterr().err
    assert "Cannot tell which model weights.npz holds" in err
    assert f"bit-studio weights import {source} --name MODEL" in err
