#!/usr/bin/env bash
# One command: build dist/deploytrack, a one-file Linux executable (no Python needed on the target).
#   packaging/build.sh [DISTDIR [WORKDIR]]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="${1:-$root/dist}"
work="${2:-$root/build/pyinstaller}"
python3 -m PyInstaller --version >/dev/null 2>&1 || python3 -m pip install -q "pyinstaller>=6.5"
python3 -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$dist" --workpath "$work" "$root/packaging/deploytrack.spec"
"$dist/deploytrack" --version
echo "built $dist/deploytrack ($(du -h "$dist/deploytrack" | cut -f1))"
