package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// Flags is the one settings parser of the Go services. It binds settings to
// command-line flags whose defaults come from environment variables, so every setting can be given either way and a flag
// wins over the variable (docs/conventions.md names the variables).
//
// Values from the environment are parsed while the flags are defined; a bad
// one is remembered and reported by Parse with the variable's name.
type Flags struct {
	fs     *flag.FlagSet
	lookup func(string) (string, bool)
	errs   []error
}

// NewFlags returns a Flags that defines flags on fs and reads variables with
// lookup (os.LookupEnv in a program, a map in a test).
func NewFlags(fs *flag.FlagSet, lookup func(string) (string, bool)) *Flags {
	return &Flags{fs: fs, lookup: lookup}
}

// String defines a string setting.
func (f *Flags) String(p *string, name, env, def, usage string) {
	if v, ok := f.lookup(env); ok {
		def = v
	}
	f.fs.StringVar(p, name, def, usage+" (env "+env+")")
}

// Text defines a setting parsed by p's UnmarshalText, for example a
// slog.Level. p holds the default on entry.
func (f *Flags) Text(p interface {
	encoding.TextUnmarshaler
	encoding.TextMarshaler
}, name, env, usage string) {
	if v, ok := f.lookup(env); ok {
		if err := p.UnmarshalText([]byte(v)); err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	}
	f.fs.TextVar(p, name, p, usage+" (env "+env+")")
}

// Parse parses args and returns every bad environment variable and the first
// bad flag, joined.
func (f *Flags) Parse(args []string) error {
	errs := append([]error(nil), f.errs...)
	if err := f.fs.Parse(args); err != nil {
		errs = append(errs, err)
	} else if f.fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", f.fs.Args()))
	}
	return errors.Join(errs...)
}

// Seconds adapts a duration to a setting written in seconds, fractions
// allowed ("1.5"), as every language reads SHOP_SHUTDOWN_GRACE_SECONDS and
// SHOP_RESERVATION_TTL_SECONDS; pass it to Flags.Text. The value is kept to
// the millisecond. Negative values are rejected, and so is zero unless
// allowZero is set. A blank value keeps the default.
func Seconds(d *time.Duration, allowZero bool) interface {
	encoding.TextUnmarshaler
	encoding.TextMarshaler
} {
	return &seconds{d: d, allowZero: allowZero}
}

type seconds struct {
	d         *time.Duration
	allowZero bool
}

func (s seconds) UnmarshalText(text []byte) error {
	raw := strings.TrimSpace(string(text))
	if raw == "" {
		return nil
	}
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (v == 0 && !s.allowZero) {
		bound := "more than zero"
		if s.allowZero {
			bound = "zero or more"
		}
		return fmt.Errorf("must be a number of seconds, %s (fractions allowed); got %q", bound, text)
	}
	*s.d = time.Duration(math.Round(v*1000)) * time.Millisecond
	return nil
}

func (s seconds) MarshalText() ([]byte, error) {
	if s.d == nil {
		return []byte("0"), nil
	}
	return []byte(strconv.FormatFloat(s.d.Seconds(), 'f', -1, 64)), nil
}

// Config is what every shop server needs to run, whatever its service.
type Config struct {
	// Service is the short name logged in every line's "service" key, for
	// example "catalog".
	Service string
	// ListenAddr is host:port; port 0 picks a free port.
	ListenAddr string
	// ShutdownGrace bounds how long a shutdown waits for in-flight RPCs
	// before cancelling them.
	ShutdownGrace time.Duration
	// LogLevel is the lowest level logged.
	LogLevel slog.Level
	// Impl names the implementation ("go") for a service that has several
	// (inventory); it tags every span. Empty for the others.
	Impl string
	// ZipkinURL is where spans are sent (Zipkin's /api/v2/spans); empty
	// sends none (spans are still made, logged by id and propagated).
	ZipkinURL string
	// TraceSampleRatio is the share of traces started here that are kept;
	// a call that arrives with a sampling decision follows it.
	TraceSampleRatio float64
	// MetricsAddr is host:port for Prometheus' /metrics; empty serves none.
	MetricsAddr string
	// CPUProfile is a file to write a pprof CPU profile of the whole run
	// to, from Serve until the shutdown ends (`make profile` sets it);
	// empty, the default, profiles nothing.
	CPUProfile string
	// MaxStreamsPerClient is how many server streams one client may hold
	// open at once (streamcap.go); 0 means no cap.
	MaxStreamsPerClient int

	// TLSCertFile and TLSKeyFile are the server's certificate (its
	// SPIFFE-style identity in the SAN) and key; TLSCAFile is the CA every
	// client certificate must come from. All three set: the server serves
	// mutual TLS only. None set: plaintext, which only unit tests use.
	TLSCertFile, TLSKeyFile, TLSCAFile string

	// creds are the transport credentials Validate loaded from the TLS
	// files; nil means plaintext.
	creds credentials.TransportCredentials
}

// DefaultShutdownGrace is SHOP_SHUTDOWN_GRACE_SECONDS's default.
const DefaultShutdownGrace = 10 * time.Second

// Register defines the common settings on f: SHOP_LISTEN_ADDR
// (-listen-addr), SHOP_SHUTDOWN_GRACE_SECONDS (-shutdown-grace-seconds) and
// SHOP_LOG_LEVEL (-log-level). defaultAddr is the service's own default, for
// example "127.0.0.1:50051". Call Validate after f.Parse.
func (c *Config) Register(f *Flags, defaultAddr string) {
	f.String(&c.ListenAddr, "listen-addr", "SHOP_LISTEN_ADDR", defaultAddr,
		"host:port to listen on; port 0 picks a free port")
	c.ShutdownGrace = DefaultShutdownGrace
	f.Text(Seconds(&c.ShutdownGrace, true), "shutdown-grace-seconds", "SHOP_SHUTDOWN_GRACE_SECONDS",
		"seconds a shutdown waits for in-flight RPCs before cancelling them, fractions allowed")
	c.LogLevel = slog.LevelInfo
	f.Text(&c.LogLevel, "log-level", "SHOP_LOG_LEVEL", "lowest level logged: debug, info, warn or error")
	f.String(&c.TLSCertFile, "tls-cert-file", "SHOP_TLS_CERT_FILE", "", "the server's TLS certificate (PEM); with the key and CA files, serve mutual TLS")
	f.String(&c.TLSKeyFile, "tls-key-file", "SHOP_TLS_KEY_FILE", "", "the server's TLS private key (PEM)")
	f.String(&c.TLSCAFile, "tls-ca-file", "SHOP_TLS_CA_FILE", "", "the CA (PEM) that every client certificate must come from")
	f.String(&c.ZipkinURL, "zipkin-url", "SHOP_ZIPKIN_URL", "",
		"Zipkin's span endpoint (http://host:9411/api/v2/spans); empty exports no spans")
	c.TraceSampleRatio = 1
	f.Text(Ratio(&c.TraceSampleRatio), "trace-sample-ratio", "SHOP_TRACE_SAMPLE_RATIO",
		"share of the traces started here that are recorded, 0 to 1")
	f.String(&c.MetricsAddr, "metrics-addr", "SHOP_METRICS_ADDR", "",
		"host:port serving Prometheus metrics at /metrics; empty serves none")
	f.String(&c.CPUProfile, "cpu-profile", "SHOP_CPU_PROFILE", "",
		"write a pprof CPU profile of the whole run to this file (make profile); empty profiles nothing")
	f.Text(Count(&c.MaxStreamsPerClient), "max-streams-per-client", "SHOP_MAX_STREAMS_PER_CLIENT",
		"server streams one client may hold open at once; 0 for no cap")
}

// Ratio adapts a float64 to a setting between 0 and 1, as
// SHOP_TRACE_SAMPLE_RATIO is; pass it to Flags.Text.
func Ratio(p *float64) interface {
	encoding.TextUnmarshaler
	encoding.TextMarshaler
} {
	return &ratio{p}
}

type ratio struct{ p *float64 }

func (r ratio) UnmarshalText(text []byte) error {
	v, err := strconv.ParseFloat(string(text), 64)
	if err != nil || v < 0 || v > 1 {
		return fmt.Errorf("%q is not a number between 0 and 1", text)
	}
	*r.p = v
	return nil
}

func (r ratio) MarshalText() ([]byte, error) {
	if r.p == nil {
		return []byte("1"), nil
	}
	return []byte(strconv.FormatFloat(*r.p, 'g', -1, 64)), nil
}

// loadTLS builds the mutual-TLS server credentials from the three files, or
// leaves c.creds nil when none is set.
func (c *Config) loadTLS() error {
	set := 0
	for _, f := range []string{c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile} {
		if f != "" {
			set++
		}
	}
	switch set {
	case 0:
		return nil
	case 3:
	default:
		return errors.New("TLS needs SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE and SHOP_TLS_CA_FILE together; only some are set")
	}
	pair, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("load SHOP_TLS_CERT_FILE/SHOP_TLS_KEY_FILE: %w", err)
	}
	caPEM, err := os.ReadFile(c.TLSCAFile)
	if err != nil {
		return fmt.Errorf("read SHOP_TLS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("SHOP_TLS_CA_FILE %s holds no PEM certificate", c.TLSCAFile)
	}
	c.creds = credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	return nil
}

// Validate checks the settings and loads the TLS files, if any.
func (c *Config) Validate() error {
	var errs []error
	if c.Service == "" {
		errs = append(errs, errors.New("the service name is empty"))
	}
	if c.ListenAddr == "" {
		errs = append(errs, errors.New("SHOP_LISTEN_ADDR (-listen-addr) is empty; set it to host:port"))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("the shutdown grace period is %s; it must not be negative", c.ShutdownGrace))
	}
	if c.ZipkinURL != "" {
		if u, err := url.Parse(c.ZipkinURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("SHOP_ZIPKIN_URL (-zipkin-url) %q is not an http(s) URL", c.ZipkinURL))
		}
	}
	if err := c.loadTLS(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
