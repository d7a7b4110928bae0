"""`python -m deploytrack` and the PyInstaller entry point."""

import sys

from deploytrack.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
