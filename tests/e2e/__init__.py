"""End-to-end journeys through Envoy's public listener (see tests/README.md)."""
