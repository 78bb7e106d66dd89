package rpcerr_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/polyglot-shop/shop/go_service/internal/rpcerr"
)

func TestAnEmptyBadRequestIsNoError(t *testing.T) {
	var b rpcerr.BadRequest
	if err := b.Err(); err != nil {
		t.Fatalf("Err() = %v, want nil", err)
	}
}

func TestBadRequestCarriesEveryViolationAndExtraDetails(t *testing.T) {
	var b rpcerr.BadRequest
	b.Add("product_ids[1]", "product_ids[1] is empty.")
	b.Add("page_size", "page_size is -1.")
	err := b.Err(rpcerr.ErrorInfo("catalog.shop.example", "INVALID_PAGE_TOKEN", nil))

	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != "product_ids[1] is empty. page_size is -1." {
		t.Fatalf("status = %v %q", st.Code(), st.Message())
	}
	details := st.Details()
	if len(details) != 2 {
		t.Fatalf("details = %v, want a BadRequest and an ErrorInfo", details)
	}
	br, ok := details[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 2 || br.GetFieldViolations()[0].GetField() != "product_ids[1]" || br.GetFieldViolations()[1].GetField() != "page_size" {
		t.Errorf("BadRequest = %v", details[0])
	}
	if info, ok := details[1].(*errdetails.ErrorInfo); !ok || info.GetReason() != "INVALID_PAGE_TOKEN" || info.GetDomain() != "catalog.shop.example" {
		t.Errorf("ErrorInfo = %v", details[1])
	}
}

func TestNewWithoutDetailsIsAPlainStatus(t *testing.T) {
	st := status.Convert(rpcerr.New(codes.NotFound, "Product \"x\" does not exist."))
	if st.Code() != codes.NotFound || len(st.Details()) != 0 {
		t.Errorf("status = %v with details %v", st.Code(), st.Details())
	}
}

func TestDecodeReadsBackWhatErrBuilt(t *testing.T) {
	var b rpcerr.BadRequest
	b.Add("lines[0].quantity", "lines[0].quantity is 0.")
	b.Add("request_id", "request_id is empty.")
	err := b.Err(rpcerr.ErrorInfo("inventory.shop.example", "OUT_OF_STOCK", map[string]string{"skus": "a"}))

	d := rpcerr.Decode(status.Convert(err))
	if len(d.FieldPaths) != 2 || d.FieldPaths[0] != "lines[0].quantity" || d.FieldPaths[1] != "request_id" {
		t.Errorf("FieldPaths = %q", d.FieldPaths)
	}
	if d.ErrorInfo.GetReason() != "OUT_OF_STOCK" || d.ErrorInfo.GetDomain() != "inventory.shop.example" || d.ErrorInfo.GetMetadata()["skus"] != "a" {
		t.Errorf("ErrorInfo = %v", d.ErrorInfo)
	}
	if d := rpcerr.Decode(status.New(codes.NotFound, "gone")); d.FieldPaths != nil || d.ErrorInfo != nil {
		t.Errorf("a status without details decoded to %+v", d)
	}
}
