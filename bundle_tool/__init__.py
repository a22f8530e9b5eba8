"""The `sesemi` command line."""
