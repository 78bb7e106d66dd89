import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequest_FieldViolationSchema, BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { explain } from "../src/errors.js";

test("a NOT_FOUND shows the service's message and its ErrorInfo reason", () => {
  const err = new ConnectError('Product "sku-nope" does not exist in the catalog.', Code.NotFound, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "PRODUCT_NOT_FOUND", domain: "catalog.shop.example" } },
  ]);
  const problem = explain(err);
  assert.equal(problem.code, "NOT_FOUND");
  assert.equal(problem.message, 'Product "sku-nope" does not exist in the catalog.');
  assert.equal(problem.reason, "PRODUCT_NOT_FOUND");
  assert.equal(problem.fields.size, 0);
});

test("BadRequest field violations are keyed by their field path", () => {
  const bad = create(BadRequestSchema, {
    fieldViolations: [
      create(BadRequest_FieldViolationSchema, { field: "customer_id", description: "customer_id is required." }),
      create(BadRequest_FieldViolationSchema, { field: "items[1].quantity", description: "quantity is 0." }),
    ],
  });
  const problem = explain(new ConnectError("bad", Code.InvalidArgument, undefined, [{ desc: BadRequestSchema, value: bad }]));
  assert.equal(problem.code, "INVALID_ARGUMENT");
  assert.deepEqual([...problem.fields], [["customer_id", "customer_id is required."], ["items[1].quantity", "quantity is 0."]]);
});

test("an error that is not a ConnectError still explains itself", () => {
  const problem = explain(new TypeError("Failed to fetch"));
  assert.equal(problem.code, "UNKNOWN");
  assert.equal(problem.message, "Failed to fetch");
});
