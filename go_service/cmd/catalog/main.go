// Command catalog serves shop.catalog.v1.CatalogService from a SQLite file,
// with grpc.health.v1 and server reflection. docs/conventions.md describes
// its settings, logs and shutdown; `catalog -h` lists the flags, each of
// which mirrors an environment variable.
package main

import (
	"context"
	"flag"
	"os"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

func main() {
	server.Main("catalog", run)
}

func run(ctx context.Context, args []string) error {
	cfg := server.Config{Service: "catalog"}
	var dbPath, seedFile string
	fs := flag.NewFlagSet("catalog", flag.ContinueOnError)
	flags := server.NewFlags(fs, os.LookupEnv)
	cfg.Register(flags, "127.0.0.1:50051")
	flags.String(&dbPath, "db-path", "SHOP_DB_PATH", "catalog.db", "the catalog's SQLite file, created and seeded on first start")
	flags.String(&seedFile, "seed-file", "SHOP_SEED_FILE", "",
		"products to seed a new database with (default: "+catalog.DefaultSeedFile+" in the working directory or its nearest parent that has one)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := server.NewLogger(os.Stdout, cfg.Service, cfg.LogLevel)

	store, err := catalog.Open(ctx, catalog.OpenOptions{Path: dbPath, SeedFile: seedFile})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close database", "error", err.Error())
		}
	}()
	log.Info("database open", "path", dbPath, "seeded_from", store.SeededFrom)

	srv := server.New(cfg, log)
	catalogv1.RegisterCatalogServiceServer(srv, catalog.NewServer(store, log))
	return srv.Run(ctx)
}
