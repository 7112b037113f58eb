"""`python -m receiver [COMMAND]`: the command line of `receiver.cli`; without a command, what `make run` runs."""

from receiver.cli import main

main()
