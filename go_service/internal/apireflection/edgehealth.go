package apireflection

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ClustersHeader is the request metadata Envoy sets on its listeners' route
// for grpc.health.v1 (deploy/shopstack/envoy/dynamic.py): for each service a
// caller of that listener may ask about, the clusters taking its traffic,
//
//	shop.catalog.v1.CatalogService=catalog-go;shop.inventory.v1.InventoryService=inventory-node,inventory-go
//
// rewritten with the routes on every swap and canary. A health check that
// carries it came through Envoy and asks about the edge; one without it
// (Envoy's own checks of this server, a direct caller) asks about this server.
const ClustersHeader = "x-shop-health-clusters"

// EdgeHealth answers grpc.health.v1 Check for the edge: with service "" (or
// this server's own services) as the server's own health server does, so
// `grpc_health_probe -addr <edge>` means "the edge is up"; with a shop
// service's name, SERVING when Envoy has at least one healthy host in a
// cluster taking that service's traffic and NOT_SERVING when it has none,
// read from Envoy's admin /clusters; any other name NOT_FOUND.
type EdgeHealth struct {
	healthpb.UnimplementedHealthServer
	// Own answers for this server itself, and for every call that did not
	// come through Envoy.
	Own healthpb.HealthServer
	// AdminURL is Envoy's admin interface, http://host:port.
	AdminURL string
	Client   *http.Client
}

// NewEdgeHealth wraps own with the edge's answers, reading Envoy's admin at
// adminAddr (host:port).
func NewEdgeHealth(own healthpb.HealthServer, adminAddr string) *EdgeHealth {
	return &EdgeHealth{Own: own, AdminURL: "http://" + adminAddr, Client: &http.Client{Timeout: 2 * time.Second}}
}

// Check implements grpc.health.v1.Health.
func (e *EdgeHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	routed, ok := parseClusters(md.Get(ClustersHeader))
	if !ok || req.GetService() == "" {
		return e.Own.Check(ctx, req)
	}
	clusters, known := routed[req.GetService()]
	if !known {
		return nil, status.Errorf(codes.NotFound,
			"unknown service %q: the edge answers for %s", req.GetService(), strings.Join(slices.Sorted(maps.Keys(routed)), ", "))
	}
	healthy, err := e.healthyClusters(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot read Envoy's cluster health: %v", err)
	}
	for _, cluster := range clusters {
		if healthy[cluster] {
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
}

// Watch implements grpc.health.v1.Health: this server's own statuses only
// (the edge's per-service answers are for Check, which probes use).
func (e *EdgeHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return e.Own.Watch(req, stream)
}

// List implements grpc.health.v1.Health: this server's own statuses.
func (e *EdgeHealth) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return e.Own.List(ctx, req)
}

// parseClusters reads ClustersHeader; ok is false when the call carries none.
func parseClusters(values []string) (map[string][]string, bool) {
	if len(values) == 0 {
		return nil, false
	}
	routed := map[string][]string{}
	for _, value := range values {
		for _, entry := range strings.Split(value, ";") {
			name, clusters, found := strings.Cut(strings.TrimSpace(entry), "=")
			if !found || name == "" {
				continue
			}
			for _, cluster := range strings.Split(clusters, ",") {
				if cluster = strings.TrimSpace(cluster); cluster != "" {
					routed[name] = append(routed[name], cluster)
				}
			}
		}
	}
	return routed, true
}

// adminClusters is the part of Envoy's /clusters?format=json
// (envoy.admin.v3.Clusters) read here.
type adminClusters struct {
	ClusterStatuses []struct {
		Name         string `json:"name"`
		HostStatuses []struct {
			HealthStatus map[string]any `json:"health_status"`
		} `json:"host_statuses"`
	} `json:"cluster_statuses"`
}

// unhealthyFlags are the envoy.admin.v3.HostHealthStatus flags that keep a
// host from taking traffic.
var unhealthyFlags = []string{
	"failed_active_health_check",
	"failed_outlier_check",
	"failed_active_degraded_check",
	"pending_dynamic_removal",
	"pending_active_hc",
	"excluded_via_immediate_hc_fail",
	"active_hc_timeout",
}

// healthyClusters asks Envoy's admin which clusters have a host that takes
// traffic: EDS health HEALTHY (or unset, for a static host) and no failure flag.
func (e *EdgeHealth) healthyClusters(ctx context.Context) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL+"/clusters?format=json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered HTTP %d", req.URL, resp.StatusCode)
	}
	var clusters adminClusters
	if err := json.NewDecoder(resp.Body).Decode(&clusters); err != nil {
		return nil, fmt.Errorf("%s: %w", req.URL, err)
	}
	healthy := map[string]bool{}
	for _, cluster := range clusters.ClusterStatuses {
		for _, host := range cluster.HostStatuses {
			if hostHealthy(host.HealthStatus) {
				healthy[cluster.Name] = true
			}
		}
	}
	return healthy, nil
}

func hostHealthy(st map[string]any) bool {
	if eds, ok := st["eds_health_status"].(string); ok && eds != "HEALTHY" {
		return false
	}
	for _, flag := range unhealthyFlags {
		if set, _ := st[flag].(bool); set {
			return false
		}
	}
	return true
}
