#!/usr/bin/env bash
# python3: Debian bookworm's Python 3 interpreter and standard library, as an OCI image layout.
# Usage: build.sh OUT_LAYOUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../lib/debian.sh" "$here" "${1:?usage: build.sh OUT_LAYOUT}" python3 '["python3"]'
