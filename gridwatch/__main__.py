"""`python -m gridwatch` runs the umbrella command."""

from gridwatch.cli import main

main()
