"""The mutation runner is a script, not a test module."""

collect_ignore_glob = ["*.py"]
