"""`python -m invoiced_assets check`: the `invoiced-assets` command, for when the console
script is not on PATH."""

import sys

from invoiced_assets.cli import main

if __name__ == "__main__":
    sys.exit(main())
