#!/usr/bin/env bash
# One command: build dist/deploytrack, a one-file Linux executable (no Python needed on the target),
# reproducibly: from packaging/requirements.lock, every package (PyInstaller too) at a pinned version
# whose hash must match, installed into a fresh virtual environment.
#   packaging/build.sh [DISTDIR [WORKDIR]]      (PYTHON=... picks the Python to build with)
#   DEPLOYTRACK_BUILD_ENV=current packaging/build.sh ...
#       builds with PYTHON's own packages instead (no download: the test suite does this), after
#       checking they are exactly the lock's versions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="${1:-$root/dist}"
work="${2:-$root/build/pyinstaller}"
py="${PYTHON:-python3}"
lock="$root/packaging/requirements.lock"
mkdir -p "$work"
if [ "${DEPLOYTRACK_BUILD_ENV:-locked}" != current ]; then
  rm -rf "$work/venv"
  "$py" -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install -q --no-deps --require-hashes -r "$lock"
  py="$work/venv/bin/python"
fi
"$py" "$root/packaging/check_lock.py" "$lock"
# PyInstaller's binary cache, per work directory: the shared default (~/.cache/pyinstaller) breaks
# when two builds run at once (its index file is rewritten without a lock).
export PYINSTALLER_CONFIG_DIR="${PYINSTALLER_CONFIG_DIR:-$work/cache}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this tree, not an installed deploytrack
"$py" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$dist" --workpath "$work" "$root/packaging/deploytrack.spec"
"$dist/deploytrack" version
echo "built $dist/deploytrack ($(du -h "$dist/deploytrack" | cut -f1))"
