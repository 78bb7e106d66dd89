package inventory

import (
	"fmt"
	"unicode/utf8"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
)

// Limits from inventory_service.proto.
const (
	maxSKUs            = 100
	maxLines           = 100
	maxRequestIDLength = 128
	maxLineQuantity    = 10_000
	maxOnHand          = 1_000_000
)

// checkSKUs checks a repeated SKU field: 1 to maxSKUs non-empty SKUs.
func checkSKUs(skus []string) []violation {
	if len(skus) == 0 || len(skus) > maxSKUs {
		return []violation{{"skus", fmt.Sprintf("must list 1 to %d SKUs; got %d", maxSKUs, len(skus))}}
	}
	var vs []violation
	for i, sku := range skus {
		if sku == "" {
			vs = append(vs, violation{fmt.Sprintf("skus[%d]", i), "must not be empty"})
		}
	}
	return vs
}

func checkReservationID(id string) []violation {
	if id == "" {
		return []violation{{"reservation_id", "must be set"}}
	}
	return nil
}

// checkReserve checks a ReserveRequest. request_id's length is counted in
// Unicode code points, which is what the proto's "characters" means.
func checkReserve(req *inventoryv1.ReserveRequest) []violation {
	var vs []violation
	switch n := utf8.RuneCountInString(req.GetRequestId()); {
	case n == 0:
		vs = append(vs, violation{"request_id", "must be set"})
	case n > maxRequestIDLength:
		vs = append(vs, violation{"request_id", fmt.Sprintf("must be at most %d characters; got %d", maxRequestIDLength, n)})
	}
	lines := req.GetLines()
	if len(lines) == 0 || len(lines) > maxLines {
		return append(vs, violation{"lines", fmt.Sprintf("must list 1 to %d lines; got %d", maxLines, len(lines))})
	}
	for i, l := range lines {
		if l.GetSku() == "" {
			vs = append(vs, violation{fmt.Sprintf("lines[%d].sku", i), "must be set"})
		}
		if q := l.GetQuantity(); q < 1 || q > maxLineQuantity {
			vs = append(vs, violation{fmt.Sprintf("lines[%d].quantity", i), fmt.Sprintf("must be 1 to %d; got %d", maxLineQuantity, q)})
		}
	}
	return vs
}

// checkImportItems checks the items of an ImportStock stream. The request
// is a stream with no field name of its own, so a violation names the item
// as items[<zero-based index>].<field>.
func checkImportItems(items []*inventoryv1.ImportStockRequest) []violation {
	var vs []violation
	for i, it := range items {
		if it.GetSku() == "" {
			vs = append(vs, violation{fmt.Sprintf("items[%d].sku", i), "must be set"})
		}
		if n := it.GetOnHand(); n < 0 || n > maxOnHand {
			vs = append(vs, violation{fmt.Sprintf("items[%d].on_hand", i), fmt.Sprintf("must be 0 to %d; got %d", maxOnHand, n)})
		}
	}
	return vs
}
