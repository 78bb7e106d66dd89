"""The API-wide reflection server that Envoy routes grpc.reflection.* to.

Each service answers reflection for itself, but behind one Envoy endpoint a
reflection request must describe the whole API, not whichever backend the
request happens to reach. This server loads the descriptor set that
`make protos` writes (every shop proto and its imports) and answers
grpc.reflection v1 and v1alpha for all of it, so `grpcurl localhost:8080 list`
and `describe` work with no proto files.
"""
