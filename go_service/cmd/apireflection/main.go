// Command apireflection answers grpc.reflection v1 and v1alpha for the whole
// shop API, loaded from the descriptor set `make protos` writes. Envoy routes
// every reflection request to it, so `grpcurl localhost:8080 list` and
// `describe` work without proto files. On the public listener Envoy sends
// the services to leave out of the list (apireflection.HideHeader), so public
// reflection lists only what the public listener serves. It serves
// grpc.health.v1 too: Envoy's listeners send the edge's health checks here,
// and with SHOP_ENVOY_ADMIN_ADDR a check naming a shop service is answered
// from Envoy's cluster health (apireflection.EdgeHealth). It otherwise runs
// like every shop service (docs/conventions.md);
// `apireflection -h` lists the flags, each of which mirrors an environment
// variable.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/polyglot-shop/shop/go_service/internal/apireflection"
	"github.com/polyglot-shop/shop/go_service/internal/repofile"
	"github.com/polyglot-shop/shop/go_service/internal/server"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	server.Main("apireflection", run)
}

func run(ctx context.Context, args []string) error {
	cfg := server.Config{Service: "reflection"}
	var descriptorSet, envoyAdmin string
	fs := flag.NewFlagSet("apireflection", flag.ContinueOnError)
	flags := server.NewFlags(fs, os.LookupEnv)
	cfg.Register(flags, "127.0.0.1:50055")
	flags.String(&descriptorSet, "descriptor-set", "SHOP_DESCRIPTOR_SET", "",
		"the FileDescriptorSet to describe (default: "+apireflection.DefaultDescriptorSet+" in the working directory or its nearest parent that has one)")
	flags.String(&envoyAdmin, "envoy-admin-addr", "SHOP_ENVOY_ADMIN_ADDR", "",
		"Envoy's admin interface (host:port); with it, grpc.health.v1 through Envoy answers per shop service whether Envoy has a healthy host for it")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := server.NewLogger(os.Stdout, cfg.Service, cfg.LogLevel)

	path, err := repofile.Resolve(descriptorSet, apireflection.DefaultDescriptorSet, "", "SHOP_DESCRIPTOR_SET")
	if err != nil {
		return err
	}
	api, err := apireflection.Load(path)
	if err != nil {
		return err
	}
	log.Info("descriptor set loaded", "path", path, "services", api.APIServices)

	srv := server.New(cfg, log)
	srv.SetReflectionServers(api.ReflectionServers())
	if envoyAdmin != "" {
		srv.SetHealthServer(func(own healthpb.HealthServer) healthpb.HealthServer {
			return apireflection.NewEdgeHealth(own, envoyAdmin)
		})
	}
	return srv.Run(ctx)
}
