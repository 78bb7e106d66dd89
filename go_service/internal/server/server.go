// Package server is the bootstrap every Go shop service shares: settings from
// the environment and flags, a JSON logger, logging and panic-recovery
// interceptors, grpc.health.v1 and server reflection, and a shutdown that
// drains in-flight RPCs within a bound. It knows nothing about any one
// service; docs/conventions.md is its specification.
//
// A service's main builds a Server, registers its servicer, then calls Run
// with a context that SIGTERM cancels:
//
//	srv := server.New(cfg, logger)
//	catalogv1.RegisterCatalogServiceServer(srv, catalogServer)
//	err := srv.Run(ctx)
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// Server is a gRPC server with the shop's interceptors, health service and
// reflection. Register services on it before calling Listen or Run.
type Server struct {
	cfg    Config
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	// services are the full names of the services registered through
	// RegisterService; each gets its own health status. Written only before
	// serving starts.
	services []string
	// reflection is what server reflection serves; nil means the services
	// registered on this server, described from the descriptors linked into
	// the binary. Written only before serving starts.
	reflection *reflection.ServerOptions
	telemetry  *Telemetry
	// reflectionV1 and reflectionV1Alpha, when set, serve reflection instead.
	reflectionV1      v1reflectiongrpc.ServerReflectionServer
	reflectionV1Alpha v1alphareflectiongrpc.ServerReflectionServer
	// healthWrap, when set, wraps the health server that answers
	// grpc.health.v1 (SetHealthServer). Written only before serving starts.
	healthWrap func(healthpb.HealthServer) healthpb.HealthServer
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// New returns a Server for cfg. opts are extra grpc.ServerOptions; tracing
// (a stats handler), the metrics interceptors and the logging and recovery
// interceptors are always installed, outermost first, so a recovered panic
// is logged and counted as INTERNAL; innermost, the cap on server streams
// per client (streamcap.go), so a refused stream is logged too.
func New(cfg Config, log *slog.Logger, opts ...grpc.ServerOption) *Server {
	tel, err := newTelemetry(cfg, log)
	if err != nil {
		// Validate rejects a malformed URL first; should the exporter still
		// refuse it, the server runs and exports nothing rather than not run.
		log.Error("tracing export disabled", "error", err.Error())
		cfg.ZipkinURL = ""
		tel, _ = newTelemetry(cfg, log)
	}
	opts = append(tel.serverOptions(cfg), append([]grpc.ServerOption{
		// Calls run on a pool of long-lived goroutines instead of a new
		// goroutine each: a new goroutine's stack is small, and growing it
		// (copying it) on every call through the interceptors cost more CPU
		// than any interceptor (docs/performance.md). A call that finds every
		// worker busy still gets a goroutine of its own.
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.ChainUnaryInterceptor(UnaryLogging(log), UnaryRecovery(log)),
		grpc.ChainStreamInterceptor(StreamLogging(log), StreamRecovery(log), newStreamCap(cfg.MaxStreamsPerClient).interceptor()),
	}, opts...)...)
	if cfg.creds != nil {
		// Mutual TLS: the handshake refuses a client without a certificate
		// from the configured CA (Config.Validate loaded it).
		opts = append(opts, grpc.Creds(cfg.creds))
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		grpc:      grpc.NewServer(opts...),
		health:    health.NewServer(),
		telemetry: tel,
	}
	// health.NewServer starts the overall status as SERVING; nothing is
	// served until Serve says so.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// streamWorkers is the size of the server's goroutine pool: grpc-go's
// experiments found one per CPU fastest; a few more keep calls that wait on
// the database from spilling over to new goroutines.
func streamWorkers() uint32 {
	return uint32(4 * runtime.GOMAXPROCS(0))
}

// SetHealthServer makes wrap's server answer grpc.health.v1 in place of the
// server's own, which wrap receives (it keeps the statuses Serve and the
// shutdown set). Call it before Serve; Serve registers health.
func (s *Server) SetHealthServer(wrap func(own healthpb.HealthServer) healthpb.HealthServer) {
	s.healthWrap = wrap
}

// registerHealth registers grpc.health.v1: the server's own, or SetHealthServer's.
func (s *Server) registerHealth() {
	var served healthpb.HealthServer = s.health
	if s.healthWrap != nil {
		served = s.healthWrap(s.health)
	}
	healthpb.RegisterHealthServer(s.grpc, served)
}

// Metrics is the registry the server's /metrics serves; a service registers
// its own series on it before Serve.
func (s *Server) Metrics() prometheus.Registerer {
	return s.telemetry.Registry
}

// SetReflection makes server reflection (grpc.reflection.v1 and v1alpha)
// answer from opts instead of describing the services registered on this
// server. A server that describes a whole API, loaded from a descriptor set,
// uses it. Call it before Serve; Serve registers reflection.
func (s *Server) SetReflection(opts reflection.ServerOptions) {
	s.reflection = &opts
}

// SetReflectionServers makes these two servers answer grpc.reflection.v1
// and v1alpha (a server whose answers depend on the call, for example). Call
// it before Serve; it takes precedence over SetReflection.
func (s *Server) SetReflectionServers(v1 v1reflectiongrpc.ServerReflectionServer, v1alpha v1alphareflectiongrpc.ServerReflectionServer) {
	s.reflectionV1, s.reflectionV1Alpha = v1, v1alpha
}

// registerReflection registers grpc.reflection.v1 and v1alpha, as set by
// SetReflection or by default for the services registered on this server.
func (s *Server) registerReflection() {
	if s.reflectionV1 != nil {
		v1reflectiongrpc.RegisterServerReflectionServer(s.grpc, s.reflectionV1)
		v1alphareflectiongrpc.RegisterServerReflectionServer(s.grpc, s.reflectionV1Alpha)
		return
	}
	if s.reflection == nil {
		reflection.Register(s.grpc)
		return
	}
	v1reflectiongrpc.RegisterServerReflectionServer(s.grpc, reflection.NewServerV1(*s.reflection))
	v1alphareflectiongrpc.RegisterServerReflectionServer(s.grpc, reflection.NewServer(*s.reflection))
}

// RegisterService registers a service implementation, as the generated
// Register...Server functions do, and gives it a health status named after
// the service, NOT_SERVING until Serve starts.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.services = append(s.services, desc.ServiceName)
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// Listen binds cfg.ListenAddr and logs the "listening" line with the bound
// address, so a caller that asked for port 0 learns the port.
func (s *Server) Listen() (net.Listener, error) {
	lis, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.cfg.ListenAddr, err)
	}
	mode := "off"
	if s.cfg.creds != nil {
		mode = "mutual"
	}
	s.log.Info("listening", "addr", lis.Addr().String(), "tls", mode)
	return lis, nil
}

// Run is Listen followed by Serve.
func (s *Server) Run(ctx context.Context) error {
	lis, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, lis)
}

// Serve serves on lis until ctx is done, then shuts down: every health status
// turns NOT_SERVING, the listener closes, in-flight RPCs get up to
// cfg.ShutdownGrace to finish, and whatever is left is cancelled. It returns
// nil after such a shutdown and an error if serving failed. Serve takes
// ownership of lis.
//
// Long-lived streams (a health Watch, a cart being quoted) hold the drain
// until they end or the grace period runs out.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	defer s.telemetry.shutdown(s.log)
	stopProfile, err := startCPUProfile(s.cfg.CPUProfile, s.log)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopProfile()
	stopMetrics, err := s.telemetry.serveMetrics(ctx, s.cfg.MetricsAddr, s.log)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopMetrics()
	s.registerHealth()
	s.registerReflection()
	s.telemetry.rpc.InitializeMetrics(s.grpc)
	// SERVING before the first call is accepted, so no health check ever
	// sees a starting server as NOT_SERVING.
	s.setServing(healthpb.HealthCheckResponse_SERVING)
	// serveErr receives grpc.Server.Serve's result; the goroutine ends when
	// Serve returns, which Stop or GracefulStop below guarantees.
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(lis) }()

	select {
	case err := <-serveErr:
		// Serve failed on its own (for example the listener broke).
		s.health.Shutdown()
		s.grpc.Stop()
		return fmt.Errorf("serve on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	s.log.Info("shutting down", "grace_seconds", s.cfg.ShutdownGrace.Seconds())
	s.health.Shutdown() // every status NOT_SERVING, for good
	if s.drain(s.cfg.ShutdownGrace) {
		s.log.Info("stopped; every in-flight call finished")
	} else {
		s.log.Warn("stopped; the grace period ended and the calls still in flight were cancelled")
	}
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve on %s: %w", lis.Addr(), err)
	}
	return nil
}

// drain stops accepting connections and waits up to grace for in-flight RPCs,
// then cancels the rest. It reports whether every RPC finished in time.
func (s *Server) drain(grace time.Duration) bool {
	// drained closes when GracefulStop returns; the goroutine ends then, at
	// the latest right after the Stop below.
	drained := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(drained)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-drained:
		return true
	case <-timer.C:
		s.grpc.Stop() // cancels every remaining RPC; GracefulStop then returns
		<-drained
		return false
	}
}

func (s *Server) setServing(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	for _, name := range s.services {
		s.health.SetServingStatus(name, st)
	}
}
