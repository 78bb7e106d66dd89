// Command floor is the bench's bare grpc-go server: grpc.health.v1 Check and
// nothing else, no interceptors, no logging, no telemetry, with the same
// mutual TLS the shop's Go services serve (a certificate, its key, and the CA
// every client certificate must come from). `make bench` measures it beside
// the services: what grpc-go itself costs per request on this machine is the
// floor each Go service's figures are compared with (docs/performance.md).
//
// Its module requires go_service's, so the build list has exactly the
// grpc-go, protobuf and x/net versions go_service/go.mod pins.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor-go:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("listen-addr", "127.0.0.1:0", "host:port to listen on")
	certFile := flag.String("tls-cert-file", "", "the server's certificate (PEM)")
	keyFile := flag.String("tls-key-file", "", "the server's private key (PEM)")
	caFile := flag.String("tls-ca-file", "", "the CA (PEM) every client certificate must come from")
	flag.Parse()
	if *certFile == "" || *keyFile == "" || *caFile == "" {
		return errors.New("-tls-cert-file, -tls-key-file and -tls-ca-file are required: the floor serves mutual TLS, as the services do")
	}
	creds, err := mutualTLS(*certFile, *keyFile, *caFile)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(srv, health.NewServer()) // SERVING from the start
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		srv.Stop()
	}()
	// The bench reads the bound address from this line.
	fmt.Printf("listening %s\n", lis.Addr())
	return srv.Serve(lis)
}

// mutualTLS is the services' server TLS (go_service/internal/server/config.go):
// a client certificate from the CA is required, TLS 1.2 at least.
func mutualTLS(certFile, keyFile, caFile string) (credentials.TransportCredentials, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the certificate and key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}), nil
}
