"""The shop's load generator: Locust users over gRPC through the edge (load/README.md)."""
