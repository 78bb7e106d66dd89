// The bench's bare grpc-go server (main.go). It requires go_service's module,
// which it does not import, so that minimal version selection gives it exactly
// the versions go_service/go.mod pins (grpc-go, protobuf, x/net, ...): the
// floor is measured on the same libraries as the services. Keep that
// requirement: `go mod tidy` would drop it, since no package is imported.
module github.com/polyglot-shop/shop/bench/floor/go

go 1.26.0

require (
	github.com/polyglot-shop/shop/go_service v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261110000943-09e21b237f2c // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace (
	github.com/polyglot-shop/shop/go_service => ../../../go_service
	github.com/polyglot-shop/shop/go_service/gen => ../../../go_service/gen
)
