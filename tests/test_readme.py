"""README.md's shell commands, as a newcomer copies them into a fresh clone (no ``runs/`` yet)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(text: str) -> list[list[str]]:
    """The command lines of every ```bash block, comments and blank lines left out."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [[line.split("#", 1)[0].strip() for line in block.splitlines()
             if line.split("#", 1)[0].strip()] for block in blocks]


def papermill_outputs_without_folder(lines: list[str]) -> list[str]:
    """Output notebooks of ``papermill IN OUT`` lines whose folder is neither tracked in the clone
    nor made by a ``mkdir -p`` earlier in the block: papermill stops on those ("output folder ...
    doesn't exist") before running anything."""
    made, missing = set(), []
    for line in lines:
        words = shlex.split(line)
        if words[:2] == ["mkdir", "-p"]:
            made.update(Path(word) for word in words[2:])
        elif words and words[0].endswith("papermill"):
            folder = Path(words[2]).parent
            if not (folder in made or any(parent in made for parent in folder.parents)
                    or (ROOT / folder).is_dir() and folder.parts[:1] != ("runs",)):
                missing.append(words[2])
    return missing


def test_papermill_helper_finds_an_output_folder_that_does_not_exist():
    assert papermill_outputs_without_folder(
        [".venv/bin/papermill notebooks/01_slicing.ipynb runs/x/01.ipynb -p run_dir runs/x"]) == ["runs/x/01.ipynb"]
    assert papermill_outputs_without_folder(
        ["mkdir -p runs/x", ".venv/bin/papermill notebooks/01_slicing.ipynb runs/x/01.ipynb"]) == []


def test_readme_papermill_commands_create_their_output_folder_first():
    blocks = bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    papermill_blocks = [lines for lines in blocks if any("papermill" in line for line in lines)]
    assert papermill_blocks, "README.md shows no papermill command"
    for lines in papermill_blocks:
        assert papermill_outputs_without_folder(lines) == [], lines
