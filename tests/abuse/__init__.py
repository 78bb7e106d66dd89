"""Abuse suites: a public client asking too much, and input no client should send (see tests/README.md)."""
