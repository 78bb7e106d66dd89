package inventory

import "github.com/prometheus/client_golang/prometheus"

// metrics are the inventory series every implementation exports under the
// same names (docs/observability.md).
type metrics struct {
	// reservations counts Reserve, Commit and Release calls that succeeded,
	// by outcome: reserved, committed, released.
	reservations *prometheus.CounterVec
	// expired counts reservations the sweeper expired.
	expired prometheus.Counter
}

func newMetrics() metrics {
	return metrics{
		reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shop_inventory_reservations_total",
			Help: "Reservations by what happened to them: reserved, committed or released.",
		}, []string{"outcome"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shop_inventory_reservations_expired_total",
			Help: "Reservations the sweeper expired because they outlived their TTL.",
		}),
	}
}

// Collectors are the server's series, to register on the server's registry:
// reservations by outcome, expiries, and the open WatchStock streams.
func (s *Server) Collectors() []prometheus.Collector {
	watchers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shop_inventory_watchers",
		Help: "Open WatchStock streams.",
	}, func() float64 { return float64(s.Watchers()) })
	return []prometheus.Collector{s.metrics.reservations, s.metrics.expired, watchers}
}
