"""House rules checked as tests: tests mirror sources; no provider names outside providers/."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROXY = ROOT / "proxy"
# Modules that are wiring or data only; each is exercised through the tests named here.
EXEMPT = {
    "__init__.py", "__main__.py",
    "gateway.py",  # the parts' container: tests/test_app.py
    "pipeline/parts.py",  # the pipeline's typed parts: every test of tests/pipeline/ goes through it
    "data/__init__.py",
}


def _sources():
    for path in sorted(PROXY.rglob("*.py")):
        rel = path.relative_to(PROXY)
        if rel.name == "__init__.py" or str(rel) in EXEMPT or rel.name in EXEMPT:
            continue
        yield rel


def test_every_module_has_a_mirrored_test_module():
    missing = [str(rel) for rel in _sources()
               if not (ROOT / "tests" / rel.parent / f"test_{rel.name}").exists()]
    assert not missing, f"modules without tests/…/test_<module>.py: {missing}"


def test_no_provider_names_outside_providers():
    from proxy import providers

    pattern = re.compile(r"\b(" + "|".join(sorted(providers.TABLE)) + r")\b")
    offenders = []
    for path in PROXY.rglob("*.py"):
        if path.is_relative_to(PROXY / "providers"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_layer_contract_holds_and_no_module_imports_in_a_loop():
    """setup.cfg's [importlinter] contracts (docs/architecture.md): layers top to bottom, no loops."""
    import subprocess
    import sys

    lint = pathlib.Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout
