#!/usr/bin/env bash
# Installs OpenAI's Codex CLI for the tests that run it against the gateway
# (tests/pipeline/test_responses_api_codex_cli.py) and CI.
#
#   deploy/tools/get-codex.sh [DEST_DIR]     # default: .venv/bin
#
# The npm package @openai/codex carries its native binary in a per-platform package; npm checks
# both against the registry's integrity hashes. The version is pinned: the tests replay what this
# version sends. Exits 0 with a message, installing nothing, where npm or the registry is missing;
# the tests then skip and say why. The tests never download anything themselves.
set -euo pipefail

PACKAGE="@openai/codex@0.169.0"
VERSION="codex-cli 0.169.0"

cd "$(dirname "$0")/../.."
dest="${1:-.venv/bin}"
prefix="$(dirname "$dest")/codex-cli"

if [ -x "$dest/codex" ] && [ "$("$dest/codex" --version 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "get-codex: npm is not installed; Codex CLI tests will skip"; exit 0
fi
if ! npm install --silent --no-audit --no-fund --prefix "$prefix" "$PACKAGE" >/dev/null 2>&1; then
  echo "get-codex: npm install $PACKAGE failed (no registry?); Codex CLI tests will skip"; exit 0
fi
mkdir -p "$dest"
ln -sf "$(cd "$prefix" && pwd)/node_modules/.bin/codex" "$dest/codex"
"$dest/codex" --version
