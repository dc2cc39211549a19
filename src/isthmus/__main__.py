"""`python -m isthmus` runs the command line."""

from isthmus.cli.main import main

main()
