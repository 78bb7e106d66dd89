"""Fault suites on private stacks: processes stopped, killed, slowed (see tests/README.md)."""
