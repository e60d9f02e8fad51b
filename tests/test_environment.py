"""The conda entry (environment.yml) and the pip pins (requirements.txt) describe one environment."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"unpinned or malformed requirement {line!r}: pin every package with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


def requirements_pins() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def environment_yml() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_pins_match_requirements():
    env = environment_yml()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    assert _pins(pip_sections[0]) == requirements_pins()


def test_environment_yml_python_matches_pyproject():
    env = environment_yml()
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"]
    assert 'requires-python = ">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text()
    assert sys.version_info[:2] == (3, 11)


def test_installed_versions_match_pins():
    """The environment the tests run in is the pinned one (catches a stale virtualenv)."""
    mismatched = {}
    for name, version in requirements_pins().items():
        installed = metadata.version(name)
        if installed.split("+")[0] != version:
            mismatched[name] = (version, installed)
    assert not mismatched, f"installed packages differ from requirements.txt: {mismatched}"


def test_pin_parser_rejects_unpinned_lines():
    import pytest

    with pytest.raises(AssertionError, match="unpinned"):
        _pins(["torch>=2"])
