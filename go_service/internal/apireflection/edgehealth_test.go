package apireflection_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/polyglot-shop/shop/go_service/internal/apireflection"
)

// adminClusters is what Envoy's /clusters?format=json says here: catalog's
// one host failed its health checks, inventory has one healthy host of two,
// orders' host is healthy (a static host: no EDS status).
const adminClusters = `{"cluster_statuses": [
  {"name": "catalog-go", "host_statuses": [{"health_status": {"failed_active_health_check": true, "eds_health_status": "HEALTHY"}}]},
  {"name": "inventory-node", "host_statuses": [{"health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": true}}]},
  {"name": "inventory-go", "host_statuses": [{"health_status": {"eds_health_status": "HEALTHY"}}]},
  {"name": "orders-python", "host_statuses": [{"health_status": {}}]}
]}`

func edgeHealth(t *testing.T) *apireflection.EdgeHealth {
	t.Helper()
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/clusters" || r.URL.Query().Get("format") != "json" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(adminClusters))
	}))
	t.Cleanup(admin.Close)
	own := health.NewServer()
	return apireflection.NewEdgeHealth(own, strings.TrimPrefix(admin.URL, "http://"))
}

func throughEnvoy(clusters string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(apireflection.ClustersHeader, clusters))
}

const routed = "shop.catalog.v1.CatalogService=catalog-go;shop.inventory.v1.InventoryService=inventory-go,inventory-node;shop.orders.v1.OrderService=orders-python"

func TestEdgeHealthAnswersWhetherEnvoyHasAHealthyHostForEachService(t *testing.T) {
	e := edgeHealth(t)
	for service, want := range map[string]healthpb.HealthCheckResponse_ServingStatus{
		"shop.catalog.v1.CatalogService":     healthpb.HealthCheckResponse_NOT_SERVING,
		"shop.inventory.v1.InventoryService": healthpb.HealthCheckResponse_SERVING,
		"shop.orders.v1.OrderService":        healthpb.HealthCheckResponse_SERVING,
		"":                                   healthpb.HealthCheckResponse_SERVING, // the edge itself: this server's own status
	} {
		resp, err := e.Check(throughEnvoy(routed), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != want {
			t.Errorf("Check(%q) = %v, %v; want %v", service, resp.GetStatus(), err, want)
		}
	}
}

func TestEdgeHealthSaysNotFoundForAServiceTheListenerDoesNotRoute(t *testing.T) {
	e := edgeHealth(t)
	_, err := e.Check(throughEnvoy(routed), &healthpb.HealthCheckRequest{Service: "shop.payments.v1.PaymentService"})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "shop.catalog.v1.CatalogService") {
		t.Fatalf("Check(PaymentService) error = %v; want NOT_FOUND listing the services answered for", err)
	}
}

func TestWithoutEnvoysHeaderHealthIsTheServersOwn(t *testing.T) {
	e := edgeHealth(t)
	// A direct caller, or Envoy checking this server: shop services are not this server's.
	_, err := e.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "shop.catalog.v1.CatalogService"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("direct Check(CatalogService) error = %v; want NOT_FOUND", err)
	}
}

func TestEdgeHealthIsUnavailableWhenEnvoysAdminDoesNotAnswer(t *testing.T) {
	e := apireflection.NewEdgeHealth(health.NewServer(), "127.0.0.1:1")
	_, err := e.Check(throughEnvoy(routed), &healthpb.HealthCheckRequest{Service: "shop.orders.v1.OrderService"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("error = %v; want UNAVAILABLE", err)
	}
}
