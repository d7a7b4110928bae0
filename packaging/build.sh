#!/usr/bin/env bash
# One command: build dist/deploytrack, a one-file Linux executable (no Python needed on the target).
#   packaging/build.sh [DISTDIR [WORKDIR]]      (PYTHON=... picks the Python to build with)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="${1:-$root/dist}"
work="${2:-$root/build/pyinstaller}"
py="${PYTHON:-python3}"
# PyInstaller's binary cache, per work directory: the shared default (~/.cache/pyinstaller) breaks
# when two builds run at once (its index file is rewritten without a lock).
export PYINSTALLER_CONFIG_DIR="${PYINSTALLER_CONFIG_DIR:-$work/cache}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this tree, not an installed deploytrack
"$py" -m PyInstaller --version >/dev/null 2>&1 || "$py" -m pip install -q "pyinstaller>=6.5"
"$py" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$dist" --workpath "$work" "$root/packaging/deploytrack.spec"
"$dist/deploytrack" --version
echo "built $dist/deploytrack ($(du -h "$dist/deploytrack" | cut -f1))"
