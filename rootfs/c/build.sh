#!/usr/bin/env bash
# c: C and C++ compilers (gcc, g++) and make from Debian bookworm, as an OCI image layout.
# Usage: build.sh OUT_LAYOUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../lib/debian.sh" "$here" "${1:?usage: build.sh OUT_LAYOUT}" gcc,g++,make,libc6-dev '["/bin/sh"]'
