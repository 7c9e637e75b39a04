"""``python -m tallyflow.cli``: the same command line as the ``tallyflow`` script."""

from tallyflow.cli.main import main

main()
