package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// DefaultSeedFile is where the seed is looked for when no path is given:
// data/products.json in the working directory or the nearest parent that has
// one, so the catalog finds the repository's file from the root or from
// go_service/.
const DefaultSeedFile = "data/products.json"

// Seed is the content of data/products.json that the catalog uses.
type Seed struct {
	CurrencyCode string        `json:"currency_code"`
	Products     []SeedProduct `json:"products"`
}

// SeedProduct is one product of the seed file. initial_stock belongs to the
// inventory service and is ignored here.
type SeedProduct struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Price       SeedMoney `json:"price"`
	Tags        []string  `json:"tags"`
}

// SeedMoney is a google.type.Money as the seed file writes it.
type SeedMoney struct {
	CurrencyCode string `json:"currency_code"`
	Units        int64  `json:"units"`
	Nanos        int32  `json:"nanos"`
}

var (
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
	tagPattern      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// ResolveSeedFile returns path when it is set, and otherwise DefaultSeedFile
// searched for in dir and then in each of its parents. It returns an error
// naming what it looked for when there is no such file.
func ResolveSeedFile(path, dir string) (string, error) {
	if path != "" {
		return path, nil
	}
	for d := dir; ; {
		candidate := filepath.Join(d, DefaultSeedFile)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no %s in %s or any parent directory; set SHOP_SEED_FILE", DefaultSeedFile, dir)
		}
		d = parent
	}
}

// LoadSeed reads and checks a seed file: at least one product, unique
// non-empty ids, names, valid prices all in the file's currency, and
// lower-case tags.
func LoadSeed(path string) (*Seed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seed file: %w", err)
	}
	var seed Seed
	if err := json.Unmarshal(data, &seed); err != nil {
		return nil, fmt.Errorf("parse seed file %s: %w", path, err)
	}
	if err := seed.validate(); err != nil {
		return nil, fmt.Errorf("seed file %s: %w", path, err)
	}
	return &seed, nil
}

func (s *Seed) validate() error {
	if !currencyPattern.MatchString(s.CurrencyCode) {
		return fmt.Errorf("currency_code %q is not an ISO 4217 code", s.CurrencyCode)
	}
	if len(s.Products) == 0 {
		return errors.New("it has no products")
	}
	var errs []error
	seen := make(map[string]bool, len(s.Products))
	for i, p := range s.Products {
		switch {
		case p.ID == "":
			errs = append(errs, fmt.Errorf("products[%d] has no id", i))
		case seen[p.ID]:
			errs = append(errs, fmt.Errorf("products[%d]: id %q appears twice", i, p.ID))
		}
		seen[p.ID] = true
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("products[%d] (%s) has no name", i, p.ID))
		}
		if p.Price.CurrencyCode != s.CurrencyCode {
			errs = append(errs, fmt.Errorf("products[%d] (%s) is priced in %q, not the catalog's %s", i, p.ID, p.Price.CurrencyCode, s.CurrencyCode))
		}
		if p.Price.Units < 0 || p.Price.Nanos < 0 || p.Price.Nanos >= nanosPerUnit {
			errs = append(errs, fmt.Errorf("products[%d] (%s) has an invalid price %d units %d nanos", i, p.ID, p.Price.Units, p.Price.Nanos))
		}
		for _, tag := range p.Tags {
			if !tagPattern.MatchString(tag) {
				errs = append(errs, fmt.Errorf("products[%d] (%s) has tag %q; tags are lower-case letters, digits and dashes", i, p.ID, tag))
			}
		}
	}
	return errors.Join(errs...)
}
