"""The umbrella `gridwatch` command; each subcommand imports its package only when used."""
