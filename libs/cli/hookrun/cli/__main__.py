"""``python -m hookrun.cli``: the same as the ``hookrun`` console script."""

from hookrun.cli.main import main

main()
