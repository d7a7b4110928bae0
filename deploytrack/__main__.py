"""`python -m deploytrack` and the PyInstaller entry point."""

import multiprocessing
import sys

from deploytrack.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the one-file executable started as a planning child (metrics/aside.py)
    sys.exit(main())
