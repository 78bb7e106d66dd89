package contracts_test

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	ordersv1 "github.com/polyglot-shop/shop/go_service/gen/shop/orders/v1"
	paymentsv1 "github.com/polyglot-shop/shop/go_service/gen/shop/payments/v1"
)

// TestOneMessageOfEveryPackageSurvivesTheWireFormat marshals a fully
// populated message from each proto package, unmarshals it into a fresh
// message and compares the two.
func TestOneMessageOfEveryPackageSurvivesTheWireFormat(t *testing.T) {
	created := timestamppb.New(time.Date(2026, 11, 25, 12, 0, 0, 123_000_000, time.UTC))
	later := timestamppb.New(time.Date(2026, 11, 25, 12, 15, 0, 0, time.UTC))
	eur := func(units int64, nanos int32) *money.Money {
		return &money.Money{CurrencyCode: "EUR", Units: units, Nanos: nanos}
	}

	for _, msg := range []proto.Message{
		&catalogv1.Product{
			Id:          "sku-espresso-beans-1kg",
			Name:        "Espresso beans, 1 kg",
			Description: "Dark-roasted arabica and robusta blend.",
			Price:       eur(24, 900_000_000),
			Tags:        []string{"beans", "coffee"},
			CreateTime:  created,
		},
		&inventoryv1.Reservation{
			ReservationId: "res-1",
			RequestId:     "req-1",
			Lines:         []*inventoryv1.ReservationLine{{Sku: "sku-espresso-beans-1kg", Quantity: 2}},
			State:         inventoryv1.ReservationState_RESERVATION_STATE_RESERVED,
			CreateTime:    created,
			ExpireTime:    later,
		},
		&paymentsv1.Payment{
			PaymentId:  "pay-1",
			RequestId:  "req-2",
			Reference:  "order-1",
			Amount:     eur(49, 800_000_000),
			State:      paymentsv1.PaymentState_PAYMENT_STATE_REFUNDED,
			CreateTime: created,
			RefundTime: later,
		},
		&ordersv1.Order{
			OrderId:    "order-1",
			RequestId:  "req-3",
			CustomerId: "customer-1",
			Lines: []*ordersv1.OrderLine{{
				ProductId: "sku-espresso-beans-1kg",
				Quantity:  2,
				UnitPrice: eur(24, 900_000_000),
				LineTotal: eur(49, 800_000_000),
			}},
			Total:          eur(49, 800_000_000),
			State:          ordersv1.OrderState_ORDER_STATE_FAILED,
			FailureReason:  ordersv1.OrderFailureReason_ORDER_FAILURE_REASON_CARD_DECLINED,
			FailureMessage: "The card was declined.",
			ReservationId:  "res-1",
			PaymentId:      "pay-1",
			CreateTime:     created,
			UpdateTime:     later,
		},
	} {
		name := string(msg.ProtoReflect().Descriptor().FullName())
		t.Run(name, func(t *testing.T) {
			requireEveryFieldSet(t, msg.ProtoReflect())
			wire, err := proto.Marshal(msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !proto.Equal(got, msg) {
				t.Errorf("after the round trip got %v, want %v", got, msg)
			}
		})
	}
}

// requireEveryFieldSet fails when the sample leaves a field of m unset, so
// the round trip covers fields added to the proto later.
func requireEveryFieldSet(t *testing.T, m protoreflect.Message) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if f := fields.Get(i); !m.Has(f) {
			t.Errorf("the sample %s leaves %s unset; set it so the round trip covers it", m.Descriptor().FullName(), f.Name())
		}
	}
}
