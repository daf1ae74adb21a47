"""The engine's remedies as the commands to type: what the window offers as buttons, the terminal prints.

An engine error says what happened and what to do in words, and names the action that fixes it in its
`remedy` (see `bit_engine.errors.REMEDIES`); this module is the one place that turns those actions into
`bit-studio` command lines and flags.
"""

from __future__ import annotations

from pathlib import Path

from bit_engine.errors import BitStudioError


def commands(
    remedy: str | None,
    *,
    model: str | None = None,
    url: str | None = None,
    path: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> list[str]:
    """The lines that tell a terminal user how to apply `remedy` ([] when there is none, or it lacks its subject).

    Args:
        remedy: a key of `bit_engine.errors.REMEDIES`, or None.
        model, url, path, run_dir: what the remedy applies to, as the error carries them.
    """
    if remedy == "resume" and run_dir is not None:
        return [f"To continue it: bit-studio resume {run_dir}"]
    if remedy == "download" and model:
        lines = [f"To download them: bit-studio weights download {model}"]
        if url:
            lines.append(
                f"With a copy of {url} fetched by other means: bit-studio weights import PATH/TO/{model}.npz"
            )
        return lines
    if remedy == "import" and model:
        return [f"Then import that file: bit-studio weights import PATH/TO/{model}.npz"]
    if remedy == "name_model" and path is not None:
        return [f"Say which model it holds: bit-studio weights import {path} --name MODEL"]
    if remedy == "offline_model" and model:
        return [f"To train that model instead, add to the command: --model {model}"]
    if remedy == "replace":
        return ["To replace it anyway, add to the command: --force"]
    return []


def render_error(exc: BitStudioError) -> str:
    """The error's message followed by the commands of its remedy, and of the errors it was raised from.

    A wrapped error's remedy comes first, the outer error's last: the outer one is the last word (for example
    "download failed: import the file" then "or train the offline model").
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__
    text = str(exc).rstrip()
    lines: list[str] = []
    for error in reversed(chain):
        if not isinstance(error, BitStudioError):
            continue
        run_dir = getattr(error, "run_dir", None)
        if error.remedy == "resume" and run_dir is not None and error is exc:
            # One command that ends the sentence: "Finish or resume the run first: bit-studio resume RUN".
            text = f"{text.rstrip('.')}: bit-studio resume {run_dir}"
            continue
        for line in commands(
            error.remedy,
            model=error.model,
            url=error.url,
            path=error.path,
            run_dir=run_dir,
        ):
            if line not in lines:
                lines.append(line)
    return "\n".join([text, *lines]) if lines else text
