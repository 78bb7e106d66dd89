// Package grpctest holds what the services' tests share when they call a
// real server over gRPC: a bounded context per call, a wait on the health
// check instead of a sleep, and a status check that says what it got.
package grpctest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// CallTimeout bounds every call a test makes; generous, for a loaded machine.
const CallTimeout = 30 * time.Second

// CallCtx returns a context that ends after CallTimeout or with the test.
func CallCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

// WaitServing blocks until the health check of service ("" for the whole
// server) says SERVING: no sleeps.
func WaitServing(t *testing.T, conn *grpc.ClientConn, service string) {
	t.Helper()
	resp, err := healthpb.NewHealthClient(conn).Check(CallCtx(t), &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check: %v, %v", resp.GetStatus(), err)
	}
}

// WantStatus fails unless err is a status with code want, and returns it.
func WantStatus(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != want {
		t.Fatalf("got error %v (code %v), want code %v", err, status.Code(err), want)
	}
	return st
}
