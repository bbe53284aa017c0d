"""The `gate` command line: a thin shell over the library (see gate.cli.main)."""
