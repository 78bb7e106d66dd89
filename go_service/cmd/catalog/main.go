// Command catalog serves shop.catalog.v1.CatalogService from a SQLite file,
// with grpc.health.v1 and server reflection. docs/conventions.md describes
// its settings, logs and shutdown; `catalog -h` lists the flags, each of
// which mirrors an environment variable.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
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
	var dbPath, seedFile, tokenKeyFile string
	fs := flag.NewFlagSet("catalog", flag.ContinueOnError)
	flags := server.NewFlags(fs, os.LookupEnv)
	cfg.Register(flags, "127.0.0.1:50051")
	flags.String(&dbPath, "db-path", "SHOP_DB_PATH", "catalog.db", "the catalog's SQLite file, created and seeded on first start")
	flags.String(&seedFile, "seed-file", "SHOP_SEED_FILE", "",
		"products to seed a new database with (default: "+catalog.DefaultSeedFile+" in the working directory or its nearest parent that has one)")
	flags.String(&tokenKeyFile, "page-token-key-file", "SHOP_PAGE_TOKEN_KEY_FILE", "",
		"a file whose contents sign page tokens, shared by every replica (default: a key made when the database is seeded)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	var tokenKey []byte
	if tokenKeyFile != "" {
		raw, err := os.ReadFile(tokenKeyFile)
		if err != nil {
			return fmt.Errorf("SHOP_PAGE_TOKEN_KEY_FILE (-page-token-key-file): %w", err)
		}
		if tokenKey = bytes.TrimSpace(raw); len(tokenKey) < catalog.MinPageTokenKeyBytes {
			return fmt.Errorf("SHOP_PAGE_TOKEN_KEY_FILE (-page-token-key-file) %s holds %d bytes; a page-token key needs at least %d",
				tokenKeyFile, len(tokenKey), catalog.MinPageTokenKeyBytes)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := server.NewLogger(os.Stdout, cfg.Service, cfg.LogLevel)

	store, err := catalog.Open(ctx, catalog.OpenOptions{Path: dbPath, SeedFile: seedFile, PageTokenKey: tokenKey})
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
