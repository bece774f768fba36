"""`sfops` subcommands: each module has ``register(subparsers)`` and sets ``func`` (args -> int)."""
