package catalog

import (
	"google.golang.org/genproto/googleapis/type/money"
)

const nanosPerUnit = 1_000_000_000

// amount is a non-negative sum of money in the catalog's currency, kept as
// google.type.Money keeps it: whole units plus nanos in [0, 1e9).
type amount struct {
	units int64
	nanos int64
}

// times returns a multiplied by a non-negative quantity.
func (a amount) times(q int64) amount {
	n := a.nanos * q // < 1e9 * 1e3 for the quantities QuoteCart accepts
	return amount{units: a.units*q + n/nanosPerUnit, nanos: n % nanosPerUnit}
}

// plus returns a + b.
func (a amount) plus(b amount) amount {
	n := a.nanos + b.nanos
	return amount{units: a.units + b.units + n/nanosPerUnit, nanos: n % nanosPerUnit}
}

func (a amount) money(currency string) *money.Money {
	return &money.Money{CurrencyCode: currency, Units: a.units, Nanos: int32(a.nanos)}
}
