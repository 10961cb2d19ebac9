"""Reproducible installs: setup.cfg gives every runtime dependency a range with an upper bound,
constraints.txt pins one exact tested version of everything the tests install, within those
ranges, and .ci/run and the README's test command install with it."""

from __future__ import annotations

import configparser
import pathlib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _install_requires() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return [Requirement(line) for line in parser["options"]["install_requires"].strip().splitlines()]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and Requirement(line).specifier, line  # exact versions only
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_has_an_upper_bound():
    for requirement in _install_requires():
        assert any(spec.operator == "<" for spec in requirement.specifier), requirement
        assert any(spec.operator == ">=" for spec in requirement.specifier), requirement


def test_constraints_pin_every_runtime_dependency_within_its_range_and_not_the_package():
    pins = _pins()
    assert "ai-enabler-proxy" not in pins
    for requirement in _install_requires():
        name = canonicalize_name(requirement.name)
        assert name in pins, name
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    for extra, lines in parser["options.extras_require"].items():  # test, and the cloud extras it pulls in
        for line in lines.strip().splitlines():
            name = canonicalize_name(Requirement(line).name)
            if name != "ai-enabler-proxy":  # `test` names the package's own extras (`[cloud]`)
                assert name in pins, (extra, line)


def test_ci_and_the_readme_install_with_the_constraints():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == ("python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]' "
                  "&& .venv/bin/python -m pytest")
    assert ci.replace(" -q", "") in (ROOT / "README.md").read_text()  # the README's test command
