// Package rpcerr builds the rich gRPC errors every shop service returns
// (AIP-193): INVALID_ARGUMENT with a google.rpc.BadRequest naming each bad
// field, and business failures carrying a google.rpc.ErrorInfo.
//
// The details travel in the grpc-status-details-bin trailer, so clients in
// every language read them from the same google.rpc.Status.
package rpcerr

import (
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// BadRequest collects field violations while a request is validated. The zero
// value is ready to use.
type BadRequest struct {
	violations []*errdetails.BadRequest_FieldViolation
}

// Add records one problem with one field. field is the proto field path with
// zero-based indexes, for example "product_ids[2]" or "lines[0].quantity";
// description is a full sentence saying what is wrong and what is allowed.
func (b *BadRequest) Add(field, description string) {
	b.violations = append(b.violations, &errdetails.BadRequest_FieldViolation{
		Field:       field,
		Description: description,
	})
}

// Len reports how many violations have been recorded.
func (b *BadRequest) Len() int { return len(b.violations) }

// Err returns nil when no violation was recorded, and otherwise an
// INVALID_ARGUMENT error whose message joins every description and whose
// details hold a BadRequest with every violation, plus any extra details
// given (for example an ErrorInfo).
func (b *BadRequest) Err(extra ...protoadapt.MessageV1) error {
	if len(b.violations) == 0 {
		return nil
	}
	descriptions := make([]string, len(b.violations))
	for i, v := range b.violations {
		descriptions[i] = v.GetDescription()
	}
	details := append([]protoadapt.MessageV1{&errdetails.BadRequest{FieldViolations: b.violations}}, extra...)
	return New(codes.InvalidArgument, strings.Join(descriptions, " "), details...)
}

// InvalidArgument is a shortcut for a BadRequest with a single violation.
func InvalidArgument(field, description string) error {
	var b BadRequest
	b.Add(field, description)
	return b.Err()
}

// ErrorInfo returns a google.rpc.ErrorInfo detail. metadata may be nil.
func ErrorInfo(domain, reason string, metadata map[string]string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Domain: domain, Reason: reason, Metadata: metadata}
}

// New returns a status error with the given code, message and details.
func New(code codes.Code, message string, details ...protoadapt.MessageV1) error {
	st := status.New(code, message)
	if len(details) == 0 {
		return st.Err()
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		// WithDetails fails only for codes.OK or a detail that cannot be
		// marshalled; neither happens with the details built here, and the
		// plain status still carries the right code and message.
		return st.Err()
	}
	return withDetails.Err()
}

// Details is what a google.rpc.Status carries, decoded: the BadRequest field
// paths in order and the ErrorInfo, if any.
type Details struct {
	FieldPaths []string
	ErrorInfo  *errdetails.ErrorInfo
}

// Decode unpacks st's BadRequest and ErrorInfo details: the one decoder of
// the details every service sends, for callers and tests alike.
func Decode(st *status.Status) Details {
	var d Details
	for _, detail := range st.Details() {
		switch v := detail.(type) {
		case *errdetails.BadRequest:
			for _, fv := range v.GetFieldViolations() {
				d.FieldPaths = append(d.FieldPaths, fv.GetField())
			}
		case *errdetails.ErrorInfo:
			d.ErrorInfo = v
		}
	}
	return d
}
