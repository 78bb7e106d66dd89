// The generated Go code of the shop's protos, as a module of its own so that
// other modules can import it (with a replace directive pointing here, see
// clients/README.md). `make protos` generates the code under shop/; this
// go.mod and go.sum are kept by hand, in step with go_service/go.mod.
module github.com/polyglot-shop/shop/go_service/gen

go 1.26.0

require (
	google.golang.org/genproto v0.0.0-20261026165753-2ffab32bce7e
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
)
