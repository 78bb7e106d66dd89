package server

import (
	"context"
	"encoding"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The headers a client is known by: the verified customer (Envoy sets it from
// a token and removes any a caller sends) and the address Envoy saw the
// client connect from (Envoy overwrites it on every call).
const (
	CustomerHeader      = "x-shop-customer"
	ClientAddressHeader = "x-shop-client-address"
)

// streamCap counts the server streams each client holds open and refuses one
// past the cap (SHOP_MAX_STREAMS_PER_CLIENT, deploy/stack.toml
// [limits.services]). Envoy bounds streams per connection and per service,
// not per client, so a WatchStock flood from one client is stopped here.
// Python's common/limits.py and Node's common/limits.ts count the same way.
type streamCap struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newStreamCap(max int) *streamCap {
	return &streamCap{max: max, open: map[string]int{}}
}

// clientOf names who a call counts against: the customer, else Envoy's
// client address, else the address of a caller that reached the port itself.
func clientOf(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, CustomerHeader); len(v) > 0 && v[0] != "" {
		return "customer " + v[0]
	}
	if v := metadata.ValueFromIncomingContext(ctx, ClientAddressHeader); len(v) > 0 && v[0] != "" {
		return "address " + v[0]
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "address " + host
		}
		return "address " + p.Addr.String()
	}
	return "address unknown"
}

// interceptor applies the cap to server-streaming calls (a server stream
// whose client sends one message: WatchStock); client and bidirectional
// streams end when their caller stops sending and are left alone.
func (c *streamCap) interceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if c.max <= 0 || !info.IsServerStream || info.IsClientStream {
			return handler(srv, ss)
		}
		client := clientOf(ss.Context())
		if !c.acquire(client) {
			return status.Errorf(codes.ResourceExhausted,
				"Too many open streams: %s already holds %d server streams on this server, the most one client may (SHOP_MAX_STREAMS_PER_CLIENT, deploy/stack.toml [limits.services]); close one and retry.",
				client, c.max)
		}
		defer c.release(client)
		return handler(srv, ss)
	}
}

func (c *streamCap) acquire(client string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client] >= c.max {
		return false
	}
	c.open[client]++
	return true
}

func (c *streamCap) release(client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client]--; c.open[client] <= 0 {
		delete(c.open, client)
	}
}

// Count adapts an int to a setting that is a whole number, zero or more (as
// SHOP_MAX_STREAMS_PER_CLIENT is); pass it to Flags.Text.
func Count(p *int) interface {
	encoding.TextUnmarshaler
	encoding.TextMarshaler
} {
	return &count{p}
}

type count struct{ p *int }

func (c *count) UnmarshalText(text []byte) error {
	raw := strings.TrimSpace(string(text))
	if raw == "" {
		return nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < 0 {
		return fmt.Errorf("must be a whole number, zero or more; got %q", text)
	}
	*c.p = v
	return nil
}

func (c *count) MarshalText() ([]byte, error) {
	if c.p == nil {
		return []byte("0"), nil
	}
	return []byte(strconv.Itoa(*c.p)), nil
}
