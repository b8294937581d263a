"""``python -m cosim`` = the `cosim` console script."""

from cosim.cli import main

main()
