"""Where a relative output path (``GSV_WAV_PATH``, default ``out/speech.wav``) lands.

dora runs a node in its YAML's folder: ``dataflow.yml``'s nodes in the repository, but those of
``dataflows/*.yml`` in ``dataflows/``. Relative to the working directory, one setting would write to
``out/`` or ``dataflows/out/`` depending on the graph. So a relative path is taken from the project
folder instead: the nearest folder at or above the working directory that holds ``pyproject.toml``
or ``.git`` (the repository for every graph in it), or the working directory where none does.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_MARKERS = ("pyproject.toml", ".git")


def project_dir(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding one of PROJECT_MARKERS, else ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    return start


def output_path(path: Path | str, cwd: Path) -> Path:
    """``path`` made absolute: as given when absolute (``~`` expanded), else under ``project_dir(cwd)``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_dir(cwd) / path
