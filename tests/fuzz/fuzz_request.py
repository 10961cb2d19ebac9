"""atheris harness over the request path and the stream parsers (RELIABILITY R25, extended tier).

Not run by CI (pytest collects only test_*.py). The PR tier runs the same targets with hypothesis
(tests/reliability/test_r25_fuzz_decoding.py). To run the extended tier, ≥ 1,000,000 executions
or 30 minutes, with 0 crashes as the pass figure:

    pip install atheris
    python tests/fuzz/fuzz_request.py -atheris_runs=1000000 -max_len=65536 tests/fuzz/corpus
    python tests/fuzz/fuzz_request.py -max_total_time=1800 tests/fuzz/corpus

A crash leaves `crash-<sha1>` in the working directory: copy it into tests/fuzz/corpus/ (where
the PR tier replays every file) and fix the code, not the corpus. Run it from the repository
root, or with the root on PYTHONPATH.
"""

from __future__ import annotations

import pathlib
import sys

import atheris

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent.parent))

with atheris.instrument_imports():
    from tests.fuzz import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
