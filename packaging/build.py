"""Build BiT Studio's one-folder bundle for this OS with PyInstaller, then run the bundle's own self-test.

    pip install -e '.[build]'              # the app and PyInstaller, in the environment that builds
    python packaging/build.py              # dist/bit-studio/ (and dist/BiT Studio.app on macOS)
    python packaging/build.py --debug-console
    python packaging/build.py --self-test-only

The bundle is only as good as its self-test: a build whose `bit-studio --self-test` fails (a missing hidden
import, data file or native library shows up there, not in PyInstaller's log) exits 1. The summary line gives
the build time, the bundle's size and its largest parts.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "bit-studio.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
NAME = "bit-studio"

#: The bundled self-test trains a model in a child process: minutes on a slow machine, never an hour.
SELF_TEST_TIMEOUT_S = 900


def bundle_dir() -> Path:
    return DIST / NAME


def executable() -> Path:
    """The program inside the bundle (for macOS, the one-folder build next to the .app)."""
    suffix = ".exe" if platform.system() == "Windows" else ""
    return bundle_dir() / f"{NAME}{suffix}"


def tree_bytes(path: Path) -> int:
    """Bytes of every regular file under `path` (links not followed, as `du` counts them)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            file = Path(folder, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def largest_parts(root: Path, count: int = 10) -> list[tuple[int, str]]:
    """The `count` largest parts of a bundle: single libraries at its top, or folders two levels down."""
    parts = []
    for entry in root.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_file():
            parts.append((entry.stat().st_size, entry.name))
        else:
            for child in entry.iterdir():
                size = tree_bytes(child) if child.is_dir() else child.stat().st_size
                parts.append((size, f"{entry.name}/{child.name}"))
    return sorted(parts, reverse=True)[:count]


#: Names of the NVIDIA CUDA libraries (and torch's CUDA half) that a CUDA build of torch brings along.
CUDA_LIBRARY = re.compile(r"^lib(cu|nv|nccl|cudnn|torch_cuda|c10_cuda)", re.IGNORECASE)


def cuda_bytes(root: Path) -> int:
    """Bytes of CUDA libraries in the bundle: what a CPU-only torch would not bring."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            file = Path(folder, name)
            if CUDA_LIBRARY.match(name) and not file.is_symlink():
                total += file.stat().st_size
    return total


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_build_environment() -> str | None:
    """Why this environment cannot build, in a sentence; None when it can."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        return "PyInstaller is not installed here: run `pip install -e '.[build]'` first (it is a build tool only)."
    sys.path.insert(0, str(ROOT / "packaging"))
    from render_icons import stale_files

    stale = stale_files()
    if stale:
        return f"The icons are out of date ({'; '.join(stale)}): run `python packaging/render_icons.py`."
    return None


def build(debug_console: bool) -> float:
    """Run PyInstaller on the spec; returns the seconds it took."""
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(DIST)]
    command += ["--workpath", str(WORK), str(SPEC)]
    if debug_console:
        command += ["--", "--debug-console"]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def self_test(program: Path) -> tuple[int, str]:
    """Run `program --self-test`; returns its exit code and its output."""
    print(f"$ {program} --self-test", flush=True)
    try:
        done = subprocess.run(
            [str(program), "--self-test"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SELF_TEST_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return 1, f"{exc.output or ''}\nThe self-test did not finish within {SELF_TEST_TIMEOUT_S} s."
    return done.returncode, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug-console", action="store_true", help="keep a console window (Windows, macOS)")
    parser.add_argument("--self-test-only", action="store_true", help="test the bundle already in dist/")
    args = parser.parse_args(argv)

    seconds = None
    if not args.self_test_only:
        problem = check_build_environment()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        try:
            seconds = build(args.debug_console)
        except subprocess.CalledProcessError as exc:
            print(f"PyInstaller failed (exit {exc.returncode}); its log is above.", file=sys.stderr)
            return 1
    program = executable()
    if not program.is_file():
        print(f"No bundle at {program}: build it first (python packaging/build.py).", file=sys.stderr)
        return 1

    size = tree_bytes(bundle_dir())
    internal = bundle_dir() / "_internal"
    contents = internal if internal.is_dir() else bundle_dir()
    print(f"Bundle: {bundle_dir()}  {gib(size)}, of which CUDA libraries {gib(cuda_bytes(contents))}")
    for part_bytes, part in largest_parts(contents):
        print(f"  {gib(part_bytes):>10}  {part}")

    code, output = self_test(program)
    print(output.rstrip())
    built = f"built in {seconds:.0f} s, " if seconds is not None else ""
    verdict = "passed" if code == 0 else f"FAILED (exit {code})"
    print(f"{NAME} bundle: {built}{gib(size)}, self-test {verdict}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
