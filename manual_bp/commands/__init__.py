"""Subcommands of the ``manual-bp`` command line (one module each)."""
