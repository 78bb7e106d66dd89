package inventory

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/polyglot-shop/shop/go_service/internal/rpcerr"
)

// ErrorDomain is the ErrorInfo domain of every inventory business error.
const ErrorDomain = "inventory.shop.example"

// The ErrorInfo reasons documented in inventory_service.proto.
const (
	reasonOutOfStock           = "OUT_OF_STOCK"
	reasonSKUNotFound          = "SKU_NOT_FOUND"
	reasonReservationNotFound  = "RESERVATION_NOT_FOUND"
	reasonReservationExpired   = "RESERVATION_EXPIRED"
	reasonReservationReleased  = "RESERVATION_RELEASED"
	reasonReservationCommitted = "RESERVATION_COMMITTED"
	reasonRequestIDReused      = "REQUEST_ID_REUSED"
)

// reasonCodes is the status code the proto documents for each reason.
var reasonCodes = map[string]codes.Code{
	reasonOutOfStock:           codes.FailedPrecondition,
	reasonSKUNotFound:          codes.NotFound,
	reasonReservationNotFound:  codes.NotFound,
	reasonReservationExpired:   codes.FailedPrecondition,
	reasonReservationReleased:  codes.FailedPrecondition,
	reasonReservationCommitted: codes.FailedPrecondition,
	reasonRequestIDReused:      codes.AlreadyExists,
}

// businessError is a business failure: the reason's code, and an ErrorInfo
// with the reason, the inventory domain and metadata (which may be nil).
func businessError(reason, message string, metadata map[string]string) error {
	return rpcerr.New(reasonCodes[reason], message, rpcerr.ErrorInfo(ErrorDomain, reason, metadata))
}

func skuNotFound(skus []string) error {
	return businessError(reasonSKUNotFound,
		fmt.Sprintf("These SKUs have never been stocked: %s.", strings.Join(skus, ", ")),
		map[string]string{"skus": strings.Join(skus, ",")})
}

// violation is one bad field: its path (for example lines[0].quantity) and
// what is wrong with it.
type violation struct {
	field, description string
}

// invalidArgument is INVALID_ARGUMENT with a BadRequest holding one field
// violation per problem. The message lists them the way every inventory
// implementation does: "The request is invalid: <field>: <problem>; ...".
func invalidArgument(vs []violation) error {
	fvs := make([]*errdetails.BadRequest_FieldViolation, len(vs))
	parts := make([]string, len(vs))
	for i, v := range vs {
		fvs[i] = &errdetails.BadRequest_FieldViolation{Field: v.field, Description: v.description}
		parts[i] = v.field + ": " + v.description
	}
	return rpcerr.New(codes.InvalidArgument, "The request is invalid: "+strings.Join(parts, "; ")+".",
		&errdetails.BadRequest{FieldViolations: fvs})
}
