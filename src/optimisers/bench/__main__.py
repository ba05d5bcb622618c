"""``python -m optimisers.bench``: the same as the ``optimisers-bench`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
