"""The `vroot` command. Each subcommand lives in its own module and imports what it needs lazily."""
