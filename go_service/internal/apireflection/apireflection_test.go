package apireflection_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	v1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/polyglot-shop/shop/go_service/internal/apireflection"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

const callTimeout = 30 * time.Second

// descriptorSet is the one `make protos` writes, from this package's
// directory.
var descriptorSet = filepath.Join("..", "..", "..", filepath.FromSlash(apireflection.DefaultDescriptorSet))

var shopServices = []string{
	"shop.catalog.v1.CatalogService",
	"shop.inventory.v1.InventoryService",
	"shop.orders.v1.OrderService",
	"shop.payments.v1.PaymentService",
}

// startReflection serves the API from the repository's descriptor set on
// 127.0.0.1:0 through the shared bootstrap, as the binary does, and returns a
// connection to it once health says SERVING.
func startReflection(t *testing.T) *grpc.ClientConn {
	t.Helper()
	api, err := apireflection.Load(descriptorSet)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := server.New(server.Config{Service: "reflection", ListenAddr: "127.0.0.1:0", ShutdownGrace: time.Second}, log)
	srv.SetReflectionServers(api.ReflectionServers())
	lis, err := srv.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	hctx, hcancel := context.WithTimeout(context.Background(), callTimeout)
	defer hcancel()
	resp, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("overall health = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	return conn
}

// reflector sends one reflection request on a fresh stream of one protocol
// version and returns the answer. v1alpha messages are wire-identical to v1,
// so both versions are driven with the v1 types.
type reflector func(t *testing.T, req *v1.ServerReflectionRequest) *v1.ServerReflectionResponse

func v1Reflector(conn *grpc.ClientConn) reflector {
	return func(t *testing.T, req *v1.ServerReflectionRequest) *v1.ServerReflectionResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		stream, err := v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatalf("v1 ServerReflectionInfo: %v", err)
		}
		if err := stream.Send(req); err != nil {
			t.Fatalf("v1 Send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("v1 Recv: %v", err)
		}
		return resp
	}
}

func v1alphaReflector(conn *grpc.ClientConn) reflector {
	return func(t *testing.T, req *v1.ServerReflectionRequest) *v1.ServerReflectionResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		stream, err := v1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatalf("v1alpha ServerReflectionInfo: %v", err)
		}
		alphaReq := new(v1alpha.ServerReflectionRequest)
		convert(t, req, alphaReq)
		if err := stream.Send(alphaReq); err != nil {
			t.Fatalf("v1alpha Send: %v", err)
		}
		alphaResp, err := stream.Recv()
		if err != nil {
			t.Fatalf("v1alpha Recv: %v", err)
		}
		resp := new(v1.ServerReflectionResponse)
		convert(t, alphaResp, resp)
		return resp
	}
}

func convert(t *testing.T, from, to proto.Message) {
	t.Helper()
	b, err := proto.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, to); err != nil {
		t.Fatal(err)
	}
}

// files decodes the FileDescriptorProtos of a response, by file name.
func files(t *testing.T, resp *v1.ServerReflectionResponse) map[string]*descriptorpb.FileDescriptorProto {
	t.Helper()
	if e := resp.GetErrorResponse(); e != nil {
		t.Fatalf("reflection error %d: %s", e.GetErrorCode(), e.GetErrorMessage())
	}
	out := map[string]*descriptorpb.FileDescriptorProto{}
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatalf("a returned file descriptor does not decode: %v", err)
		}
		out[fd.GetName()] = fd
	}
	return out
}

// hasComment reports whether fd's source info carries a leading comment
// containing text.
func hasComment(fd *descriptorpb.FileDescriptorProto, text string) bool {
	for _, loc := range fd.GetSourceCodeInfo().GetLocation() {
		if strings.Contains(loc.GetLeadingComments(), text) {
			return true
		}
	}
	return false
}

func forEachVersion(t *testing.T, test func(t *testing.T, ask reflector)) {
	conn := startReflection(t)
	t.Run("v1", func(t *testing.T) { test(t, v1Reflector(conn)) })
	t.Run("v1alpha", func(t *testing.T) { test(t, v1alphaReflector(conn)) })
}

func TestListShowsEveryShopServiceAndTheServersOwn(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ask reflector) {
		resp := ask(t, &v1.ServerReflectionRequest{MessageRequest: &v1.ServerReflectionRequest_ListServices{}})
		var got []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			got = append(got, s.GetName())
		}
		want := append(slices.Clone(shopServices),
			"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("listed services = %q, want %q", got, want)
		}
	})
}

func TestTheHideHeaderLeavesServicesOutOfTheListOnly(t *testing.T) {
	conn := startReflection(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, apireflection.HideHeader, "shop.payments.v1.PaymentService, grpc.health.v1.Health")
	stream, err := v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	if err := stream.Send(&v1.ServerReflectionRequest{MessageRequest: &v1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	if slices.Contains(got, "shop.payments.v1.PaymentService") || slices.Contains(got, "grpc.health.v1.Health") {
		t.Fatalf("listed %q despite %s", got, apireflection.HideHeader)
	}
	if !slices.Contains(got, "shop.orders.v1.OrderService") {
		t.Fatalf("listed %q, want the services not hidden", got)
	}
	// A hidden service's descriptors still resolve: only the list changes.
	symbol := &v1.ServerReflectionRequest{MessageRequest: &v1.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "shop.payments.v1.PaymentService",
	}}
	if err := stream.Send(symbol); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if resp, err = stream.Recv(); err != nil || resp.GetFileDescriptorResponse() == nil {
		t.Fatalf("file containing a hidden service = %v, %v", resp, err)
	}
}

func TestAMethodSymbolResolvesToItsFileWithCommentsAndImports(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ask reflector) {
		resp := ask(t, &v1.ServerReflectionRequest{
			MessageRequest: &v1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "shop.orders.v1.OrderService.PlaceOrder"},
		})
		got := files(t, resp)
		fd, ok := got["shop/orders/v1/order_service.proto"]
		if !ok {
			t.Fatalf("files for the PlaceOrder method = %v, want shop/orders/v1/order_service.proto", slices.Sorted(maps.Keys(got)))
		}
		if !hasComment(fd, "PlaceOrder") {
			t.Errorf("order_service.proto has no leading comment mentioning PlaceOrder: source info was dropped")
		}
		// The file's imports come along, so a client can build it.
		for _, dep := range fd.GetDependency() {
			if _, ok := got[dep]; !ok {
				t.Errorf("dependency %s of order_service.proto was not sent (got %v)", dep, slices.Sorted(maps.Keys(got)))
			}
		}
	})
}

func TestEveryShopServiceAndTheHealthServiceResolve(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ask reflector) {
		for _, name := range append(slices.Clone(shopServices), "grpc.health.v1.Health", "shop.inventory.v1.StockLevel", "shop.inventory.v1.ReservationState") {
			resp := ask(t, &v1.ServerReflectionRequest{
				MessageRequest: &v1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name},
			})
			if len(files(t, resp)) == 0 {
				t.Errorf("no file for %s", name)
			}
		}
		resp := ask(t, &v1.ServerReflectionRequest{
			MessageRequest: &v1.ServerReflectionRequest_FileByFilename{FileByFilename: "shop/inventory/v1/inventory_service.proto"},
		})
		if fd := files(t, resp)["shop/inventory/v1/inventory_service.proto"]; fd == nil || !hasComment(fd, "InventoryService owns the stock") {
			t.Errorf("file_by_filename for inventory_service.proto = %v, want it with its comments", fd.GetName())
		}
	})
}

func TestAnUnknownSymbolIsNotFound(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ask reflector) {
		resp := ask(t, &v1.ServerReflectionRequest{
			MessageRequest: &v1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "shop.orders.v1.OrderService.NoSuchMethod"},
		})
		if e := resp.GetErrorResponse(); e == nil || e.GetErrorCode() != 5 { // NOT_FOUND
			t.Fatalf("response for an unknown symbol = %v, want an error response with code 5", resp)
		}
	})
}

func TestTheHTTPAnnotationExtensionIsKnown(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ask reflector) {
		resp := ask(t, &v1.ServerReflectionRequest{
			MessageRequest: &v1.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: "google.protobuf.MethodOptions"},
		})
		const httpRule = 72295728 // google.api.http
		if !slices.Contains(resp.GetAllExtensionNumbersResponse().GetExtensionNumber(), httpRule) {
			t.Fatalf("extension numbers of MethodOptions = %v, want %d (google.api.http)", resp, httpRule)
		}
		resp = ask(t, &v1.ServerReflectionRequest{
			MessageRequest: &v1.ServerReflectionRequest_FileContainingExtension{FileContainingExtension: &v1.ExtensionRequest{
				ContainingType: "google.protobuf.MethodOptions", ExtensionNumber: httpRule,
			}},
		})
		if _, ok := files(t, resp)["google/api/annotations.proto"]; !ok {
			t.Fatalf("file containing google.api.http = %v, want google/api/annotations.proto", resp)
		}
	})
}

func TestLoadNamesTheFileWhenItCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.binpb")
	if _, err := apireflection.Load(missing); err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "make protos") {
		t.Errorf("Load of a missing file = %v, want an error naming it and `make protos`", err)
	}

	garbage := filepath.Join(dir, "garbage.binpb")
	if err := os.WriteFile(garbage, []byte("not a descriptor set"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := apireflection.Load(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("Load of garbage = %v, want an error naming the file", err)
	}

	// A set without its imports (protoc without --include_imports).
	data, err := os.ReadFile(descriptorSet)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(data, &set); err != nil {
		t.Fatal(err)
	}
	set.File = slices.DeleteFunc(set.File, func(f *descriptorpb.FileDescriptorProto) bool {
		return strings.HasPrefix(f.GetName(), "google/")
	})
	incomplete, err := proto.Marshal(&set)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apireflection.Parse(incomplete); err == nil || !strings.Contains(err.Error(), "include_imports") {
		t.Errorf("Parse of a set without imports = %v, want an error about --include_imports", err)
	}

	if _, err := apireflection.Parse(nil); err == nil || !strings.Contains(err.Error(), "no service") {
		t.Errorf("Parse of an empty set = %v, want an error saying it has no service", err)
	}
}
