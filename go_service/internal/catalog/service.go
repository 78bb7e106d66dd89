// Package catalog implements shop.catalog.v1.CatalogService on a SQLite
// store seeded from data/products.json.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/rpcerr"
)

// The ErrorInfo domain and reasons documented on CatalogService.
const (
	ErrorDomain            = "catalog.shop.example"
	ReasonProductNotFound  = "PRODUCT_NOT_FOUND"
	ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"
	// MetadataProductIDs is the ErrorInfo metadata key listing unknown ids.
	MetadataProductIDs = "product_ids"
)

// The bounds the proto documents.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
	MaxBatchSize    = 100
	MaxQuantity     = 999
)

// Server implements CatalogService on a Store.
type Server struct {
	catalogv1.UnimplementedCatalogServiceServer

	store *Store
	log   *slog.Logger
}

var _ catalogv1.CatalogServiceServer = (*Server)(nil)

// NewServer returns a CatalogService backed by store. log receives the
// details of internal errors, which clients see only as INTERNAL.
func NewServer(store *Store, log *slog.Logger) *Server {
	return &Server{store: store, log: log}
}

// GetProduct returns one product by id.
func (s *Server) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	id := req.GetProductId()
	if id == "" {
		return nil, rpcerr.InvalidArgument("product_id", "product_id is required; set it to a product id such as \"sku-espresso-beans-1kg\".")
	}
	found, err := s.store.Get(ctx, []string{id})
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	p, ok := found[id]
	if !ok {
		return nil, notFound([]string{id})
	}
	return &catalogv1.GetProductResponse{Product: s.toProto(p)}, nil
}

// BatchGetProducts returns every product asked for, in order, or NOT_FOUND
// naming every unknown id.
func (s *Server) BatchGetProducts(ctx context.Context, req *catalogv1.BatchGetProductsRequest) (*catalogv1.BatchGetProductsResponse, error) {
	ids := req.GetProductIds()
	var bad rpcerr.BadRequest
	switch {
	case len(ids) == 0:
		bad.Add("product_ids", "product_ids is empty; name between 1 and 100 products.")
	case len(ids) > MaxBatchSize:
		bad.Add("product_ids", fmt.Sprintf("product_ids has %d ids; at most %d are allowed per call.", len(ids), MaxBatchSize))
	}
	for i, id := range ids {
		if id == "" {
			bad.Add(fmt.Sprintf("product_ids[%d]", i), fmt.Sprintf("product_ids[%d] is empty; every id must be set.", i))
		}
	}
	if err := bad.Err(); err != nil {
		return nil, err
	}

	unique := dedupe(ids)
	found, err := s.store.Get(ctx, unique)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	var missing []string
	for _, id := range unique {
		if _, ok := found[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, notFound(missing)
	}
	resp := &catalogv1.BatchGetProductsResponse{Products: make([]*catalogv1.Product, len(ids))}
	for i, id := range ids {
		resp.Products[i] = s.toProto(found[id])
	}
	return resp, nil
}

// ListProducts returns one page of products ordered by id.
func (s *Server) ListProducts(ctx context.Context, req *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	var bad rpcerr.BadRequest
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > MaxPageSize:
		bad.Add("page_size", fmt.Sprintf("page_size is %d; it must be between 0 and %d, and 0 means %d.", size, MaxPageSize, DefaultPageSize))
	case size == 0:
		size = DefaultPageSize
	}
	var after string
	var tokenInvalid bool
	if tok := req.GetPageToken(); tok != "" {
		t, err := verifyToken(s.store.tokenKey, tok)
		switch {
		case err != nil:
			tokenInvalid = true
			bad.Add("page_token", "page_token was not issued by this catalog or was altered; pass a next_page_token unchanged, or leave it empty for the first page.")
		case t.Tag != req.GetTag():
			tokenInvalid = true
			bad.Add("page_token", fmt.Sprintf("page_token belongs to a listing with tag %q, not %q; keep the tag unchanged while paging, or leave the token empty to start over.", t.Tag, req.GetTag()))
		default:
			after = t.AfterID
		}
	}
	if tokenInvalid {
		return nil, bad.Err(rpcerr.ErrorInfo(ErrorDomain, ReasonInvalidPageToken, nil))
	}
	if err := bad.Err(); err != nil {
		return nil, err
	}

	products, more, err := s.store.List(ctx, req.GetTag(), after, size)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	resp := &catalogv1.ListProductsResponse{Products: make([]*catalogv1.Product, len(products))}
	for i, p := range products {
		resp.Products[i] = s.toProto(p)
	}
	if more {
		last := products[len(products)-1].ID
		resp.NextPageToken = signToken(s.store.tokenKey, pageToken{AfterID: last, Tag: req.GetTag()})
	}
	return resp, nil
}

// cartLine is one line of a cart being quoted.
type cartLine struct {
	quantity  int64
	unitPrice amount
}

// QuoteCart prices a cart while the client edits it, one change per message.
// An unknown product or invalid input ends the stream with the error; the
// cart lives only as long as the stream.
func (s *Server) QuoteCart(stream grpc.BidiStreamingServer[catalogv1.QuoteCartRequest, catalogv1.QuoteCartResponse]) error {
	ctx := stream.Context()
	// cart is owned by this handler's goroutine alone.
	cart := make(map[string]cartLine)
	for {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err // the stream broke; err is already a status
		}
		if err := validateQuoteLine(req); err != nil {
			return err
		}
		id := req.GetProductId()
		if req.GetRemove() {
			delete(cart, id)
		} else {
			found, err := s.store.Get(ctx, []string{id})
			if err != nil {
				return s.internal(ctx, err)
			}
			p, ok := found[id]
			if !ok {
				return notFound([]string{id})
			}
			cart[id] = cartLine{quantity: int64(req.GetQuantity()), unitPrice: p.Price}
		}
		if err := stream.Send(s.quote(cart)); err != nil {
			return err
		}
	}
}

// PriceCart prices a whole cart in one call, all or nothing: the unary form
// of QuoteCart for clients that cannot stream requests (browsers).
func (s *Server) PriceCart(ctx context.Context, req *catalogv1.PriceCartRequest) (*catalogv1.PriceCartResponse, error) {
	items := req.GetItems()
	if err := validatePriceCart(items); err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, item := range items {
		ids[i] = item.GetProductId()
	}
	found, err := s.store.Get(ctx, ids)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	var missing []string
	cart := make(map[string]cartLine, len(items))
	for _, item := range items {
		p, ok := found[item.GetProductId()]
		if !ok {
			missing = append(missing, item.GetProductId())
			continue
		}
		cart[p.ID] = cartLine{quantity: int64(item.GetQuantity()), unitPrice: p.Price}
	}
	if len(missing) > 0 {
		return nil, notFound(missing)
	}
	quote := s.quote(cart)
	return &catalogv1.PriceCartResponse{Lines: quote.GetLines(), Total: quote.GetTotal(), ItemCount: quote.GetItemCount()}, nil
}

func validatePriceCart(items []*catalogv1.PriceCartItem) error {
	var bad rpcerr.BadRequest
	if len(items) > MaxBatchSize {
		bad.Add("items", fmt.Sprintf("items has %d lines; a cart has at most %d.", len(items), MaxBatchSize))
	}
	first := make(map[string]int, len(items))
	for i, item := range items {
		id, q := item.GetProductId(), item.GetQuantity()
		switch earlier, seen := first[id]; {
		case id == "":
			bad.Add(fmt.Sprintf("items[%d].product_id", i), fmt.Sprintf("items[%d].product_id is empty; every line names a product.", i))
		case seen:
			bad.Add(fmt.Sprintf("items[%d].product_id", i), fmt.Sprintf("items[%d].product_id %q is already on items[%d]; list each product once with its total quantity.", i, id, earlier))
		default:
			first[id] = i
		}
		if q < 1 || q > MaxQuantity {
			bad.Add(fmt.Sprintf("items[%d].quantity", i), fmt.Sprintf("items[%d].quantity is %d; it must be between 1 and %d.", i, q, MaxQuantity))
		}
	}
	return bad.Err()
}

func validateQuoteLine(req *catalogv1.QuoteCartRequest) error {
	var bad rpcerr.BadRequest
	if req.GetProductId() == "" {
		bad.Add("product_id", "product_id is required; set it to the product whose line changes.")
	}
	q := req.GetQuantity()
	switch {
	case req.GetRemove() && q != 0:
		bad.Add("quantity", fmt.Sprintf("quantity is %d but remove is set; leave quantity at 0 to remove a line.", q))
	case !req.GetRemove() && (q < 1 || q > MaxQuantity):
		bad.Add("quantity", fmt.Sprintf("quantity is %d; it must be between 1 and %d, or set remove to drop the line.", q, MaxQuantity))
	}
	return bad.Err()
}

// quote prices the whole cart, lines ordered by product id.
func (s *Server) quote(cart map[string]cartLine) *catalogv1.QuoteCartResponse {
	ids := make([]string, 0, len(cart))
	for id := range cart {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	cur := s.store.Currency()
	resp := &catalogv1.QuoteCartResponse{Lines: make([]*catalogv1.CartLine, len(ids))}
	var total amount
	var count int64
	for i, id := range ids {
		line := cart[id]
		lineTotal := line.unitPrice.times(line.quantity)
		total = total.plus(lineTotal)
		count += line.quantity
		resp.Lines[i] = &catalogv1.CartLine{
			ProductId: id,
			Quantity:  int32(line.quantity),
			UnitPrice: line.unitPrice.money(cur),
			LineTotal: lineTotal.money(cur),
		}
	}
	resp.Total = total.money(cur)
	resp.ItemCount = int32(count) // at most MaxQuantity per product in the catalog
	return resp
}

func (s *Server) toProto(p *Product) *catalogv1.Product {
	return &catalogv1.Product{
		Id:          p.ID,
		Name:        p.Name,
		Description: p.Description,
		Price:       p.Price.money(s.store.Currency()),
		Tags:        p.Tags,
		CreateTime:  timestamppb.New(p.CreateTime),
	}
}

// notFound is NOT_FOUND with reason PRODUCT_NOT_FOUND naming every id.
func notFound(ids []string) error {
	var msg string
	if len(ids) == 1 {
		msg = fmt.Sprintf("Product %q does not exist in the catalog.", ids[0])
	} else {
		msg = fmt.Sprintf("Products %s do not exist in the catalog.", quoteList(ids))
	}
	return rpcerr.New(codes.NotFound, msg, rpcerr.ErrorInfo(ErrorDomain, ReasonProductNotFound, map[string]string{
		MetadataProductIDs: strings.Join(ids, ","),
	}))
}

// internal maps a store error to the status the client sees: the call's own
// cancellation or deadline when that is what stopped it, INTERNAL otherwise,
// with the details logged here rather than sent.
func (s *Server) internal(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	s.log.ErrorContext(ctx, "catalog store failed", "error", err.Error())
	return status.Error(codes.Internal, "The catalog could not read its database; the error has been logged, and the call can be retried.")
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func quoteList(ids []string) string {
	quoted := make([]string, len(ids))
	for i, id := range ids {
		quoted[i] = fmt.Sprintf("%q", id)
	}
	return strings.Join(quoted, ", ")
}
