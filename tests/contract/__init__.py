"""Contract conformance suites: one per service, run against any address."""
