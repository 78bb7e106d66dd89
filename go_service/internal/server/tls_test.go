package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/polyglot-shop/shop/go_service/internal/server"
)

// testCA is a throwaway certificate authority for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for identity (a spiffe URI) and its key into dir
// and returns their paths and the loaded pair.
func (ca *testCA) issue(t *testing.T, dir, identity string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := url.Parse(identity)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: identity},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(uri.Path, "/", "")
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func TestTLSServerRequiresAClientCertificateFromItsCA(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "shop test CA")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := ca.issue(t, dir, "spiffe://shop.local/catalog")
	_, _, client := ca.issue(t, dir, "spiffe://shop.local/operator")
	other := newTestCA(t, "another CA")
	_, _, stranger := other.issue(t, t.TempDir(), "spiffe://shop.local/operator")

	env := map[string]string{"SHOP_TLS_CERT_FILE": certFile, "SHOP_TLS_KEY_FILE": keyFile, "SHOP_TLS_CA_FILE": caFile}
	cfg := server.Config{Service: "catalog"}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.Register(server.NewFlags(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }), "127.0.0.1:0")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	srv := server.New(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	lis, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	cases := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"a certificate from the CA", credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}}), true},
		{"no client certificate", credentials.NewTLS(&tls.Config{RootCAs: roots}), false},
		{"a certificate from another CA", credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{stranger}}), false},
		{"plaintext", insecure.NewCredentials(), false},
	}
	for _, tc := range cases {
		err := check(tc.creds)
		if tc.ok && err != nil {
			t.Errorf("%s: health check failed: %v", tc.name, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: the server answered; it must refuse the connection", tc.name)
		}
	}
}

func TestTLSNeedsAllThreeFiles(t *testing.T) {
	cfg := server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", TLSCertFile: "x.crt"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "SHOP_TLS_KEY_FILE") {
		t.Errorf("Validate = %v, want an error naming the missing TLS variables", err)
	}
}
