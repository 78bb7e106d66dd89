package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// runMainEnv makes the test binary run main instead of the tests, so the
// real binary's configuration, logs and signal handling are what is tested.
const runMainEnv = "APIREFLECTION_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const callTimeout = 60 * time.Second

// The binary is started from this package's directory with no
// SHOP_DESCRIPTOR_SET, so it must find protos/gen/shop_api.binpb three
// directories up, as it does from go_service/ or the repository root.
func TestTheBinaryFindsTheDescriptorSetListsTheAPIAndStopsOnSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "SHOP_DESCRIPTOR_SET=")
	}), runMainEnv+"=1", "SHOP_LISTEN_ADDR=127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// lines receives every stdout line; the reader ends at EOF, when the
	// process exits.
	lines := make(chan map[string]any, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"not-json": sc.Text()}
			}
			lines <- m
		}
	}()
	var addr string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("exited before listening; stderr:\n%s", stderr.String())
			}
			if l["service"] != "reflection" {
				t.Errorf("log line without service reflection: %v", l)
			}
			if l["msg"] == "descriptor set loaded" && !strings.HasSuffix(l["path"].(string), filepath.FromSlash("protos/gen/shop_api.binpb")) {
				t.Errorf("loaded %v, want the repository's protos/gen/shop_api.binpb", l["path"])
			}
			if l["msg"] == "listening" {
				addr = l["addr"].(string)
			}
		case <-time.After(callTimeout):
			t.Fatal("no listening line")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil ||
		resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("overall health = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	stream, err := v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&v1.ServerReflectionRequest{MessageRequest: &v1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"shop.catalog.v1.CatalogService", "shop.inventory.v1.InventoryService", "shop.orders.v1.OrderService", "shop.payments.v1.PaymentService"} {
		if !slices.Contains(names, want) {
			t.Errorf("list = %q, lacks %s", names, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range lines { // drain until EOF
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, stderr.String())
	}
}

func TestAMissingDescriptorSetExitsNonZeroNamingIt(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "shop_api.binpb")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "SHOP_LISTEN_ADDR=127.0.0.1:0", "SHOP_DESCRIPTOR_SET="+missing)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit = %v, want non-zero", err)
	}
	if !strings.Contains(stderr.String(), missing) || !strings.Contains(stderr.String(), "make protos") {
		t.Errorf("stderr %q does not name %s and `make protos`", stderr.String(), missing)
	}
}
