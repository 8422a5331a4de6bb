"""``python -m errands``: the command line."""

from errands.cli import main

main()
