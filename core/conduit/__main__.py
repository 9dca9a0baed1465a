"""``python -m conduit`` is the ``conduit`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
