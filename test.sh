#!/usr/bin/env bash
# Install autorank with its dev tools into .venv, then lint, type-check and run the tests.
# Extra arguments go to pytest (e.g. `bash test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check autorank tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
