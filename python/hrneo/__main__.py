"""`python -m hrneo`: the same program as the `hrneo` console script."""

import sys

from hrneo.cli import main

if __name__ == "__main__":
    sys.exit(main())
