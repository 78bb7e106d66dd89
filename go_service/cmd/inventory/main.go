// Command inventory serves shop.inventory.v1.InventoryService from a SQLite
// file laid out by the shared data/inventory_schema.sql, with grpc.health.v1
// and server reflection. It is the Go implementation of a contract the Node
// and Python services implement too; any of them may run on the same database
// file at the same time. docs/conventions.md describes its settings, logs and
// shutdown; `inventory -h` lists the flags, each of which mirrors an
// environment variable.
package main

import (
	"context"
	"flag"
	"os"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

func main() {
	server.Main("inventory", run)
}

func run(ctx context.Context, args []string) error {
	cfg := server.Config{Service: "inventory", Impl: "go"}
	var dbPath, seedFile, schemaFile string
	ttl := inventory.DefaultReservationTTL
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	flags := server.NewFlags(fs, os.LookupEnv)
	cfg.Register(flags, "127.0.0.1:50062")
	flags.String(&dbPath, "db-path", "SHOP_DB_PATH", "inventory.db", "the inventory's SQLite file, created and seeded on first start")
	flags.String(&seedFile, "seed-file", "SHOP_SEED_FILE", "",
		"products whose initial_stock seeds a new database (default: "+inventory.DefaultSeedFile+" in the working directory or its nearest parent that has one)")
	flags.String(&schemaFile, "schema-file", "SHOP_INVENTORY_SCHEMA", "",
		"the schema every inventory implementation applies (default: "+inventory.DefaultSchemaFile+" in the working directory or its nearest parent that has one)")
	flags.Text(server.Seconds(&ttl, false), "reservation-ttl-seconds", "SHOP_RESERVATION_TTL_SECONDS",
		"seconds an uncommitted reservation lives, more than zero; fractions allowed")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// "impl" tells this implementation's lines from the others' in a stack
	// where several inventories run.
	log := server.NewLogger(os.Stdout, cfg.Service, cfg.LogLevel).With("impl", "go")

	store, err := inventory.Open(ctx, inventory.OpenOptions{Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close database", "error", err.Error())
		}
	}()
	log.Info("database open", "path", dbPath, "schema", store.SchemaFile, "seeded_from", store.SeededFrom,
		"reservation_ttl_seconds", ttl.Seconds())

	inv := inventory.NewServer(store, log, inventory.Options{ReservationTTL: ttl})
	srv := server.New(cfg, log)
	inventoryv1.RegisterInventoryServiceServer(srv, inv)
	srv.Metrics().MustRegister(inv.Collectors()...)

	// The sweeper and the watch hub run until the server has stopped (or,
	// on SIGTERM, from the moment the drain begins, ending open watches so
	// they do not hold it up).
	bgCtx, stopBackground := context.WithCancel(ctx)
	background := make(chan struct{})
	go func() {
		defer close(background)
		inv.Run(bgCtx)
	}()
	err = srv.Run(ctx)
	stopBackground()
	<-background
	return err
}
