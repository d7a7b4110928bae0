"""Exit 1 (listing the differences) unless this Python has exactly the versions pinned in the lock.

    python packaging/check_lock.py packaging/requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")


def pins(lock: Path) -> dict[str, str]:
    return {m[1].lower().replace("_", "-"): m[2] for line in lock.read_text().splitlines() if (m := PIN.match(line))}


def main(lock: str) -> int:
    wrong = []
    for name, wanted in sorted(pins(Path(lock)).items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if have != wanted:
            wrong.append(f"  {name}: lock {wanted}, installed {have}")
    if wrong:
        print(f"{sys.executable} does not have the locked versions:", *wrong,
              f"install them with: {sys.executable} -m pip install --require-hashes -r {lock}", sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
