"""`make bench`: throughput and latency of each service, direct and through Envoy.

See docs/performance.md for what is measured, how, and the latest figures.
"""
