"""Finish the OpenAPI document protoc-gen-openapi writes from the protos.

`make protos` runs gnostic's protoc-gen-openapi (pinned in tools/go.mod) on
the google.api.http annotations; it writes openapi.yaml with every JSON route,
its parameters and schemas, and google.rpc.Status as each operation's default
(error) response. This script turns it into the openapi.json the edge serves:

- examples: a proto comment that says `for example "X"` makes X the example of
  that field or parameter, so the document shows the values the comments do;
- descriptions lose the one-space indent proto comments leave on each line;
- errors: instead of one catch-all default response, the HTTP statuses the
  edge answers errors with, each a google.rpc.Status (the transcoder maps the
  gRPC code to the status), so a client and a checker know which to expect;
- a relative server, so a page served by the edge calls the same edge.

Usage: python tools/openapi.py IN.yaml OUT.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = re.compile(r'\bfor example "([^"]+)"')

DESCRIPTION = """\
The shop's JSON API: Envoy transcodes each route to the gRPC method named in
its operationId (the protos' google.api.http annotations are the source).
Every error is a google.rpc.Status: `code` is the gRPC code, `details` holds a
google.rpc.ErrorInfo whose `reason` is documented on each service, and a
google.rpc.BadRequest naming each bad field for INVALID_ARGUMENT."""


def _tidy(description: str) -> str:
    return "\n".join(line[1:] if line.startswith(" ") else line for line in description.split("\n"))


def _finish(node: Any) -> None:
    """Walk the document: tidy descriptions, add examples from them."""
    if isinstance(node, dict):
        description = node.get("description")
        if isinstance(description, str):
            node["description"] = _tidy(description)
            match = EXAMPLE.search(" ".join(description.split()))
            if match and "example" not in node:
                target = node["schema"] if "schema" in node and "in" in node else node
                if target.get("type") == "array":
                    target["example"] = [match.group(1)]
                else:
                    target["example"] = match.group(1)
        for value in node.values():
            _finish(value)
    elif isinstance(node, list):
        for value in node:
            _finish(value)


# HTTP status -> the gRPC codes the edge answers with it (Envoy's transcoder
# maps each gRPC code to one HTTP status; Envoy's own replies use the same).
ERRORS = {
    "400": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the request cannot be served as it is",
    "401": "UNAUTHENTICATED: a customer token is missing or not valid (placing and reading orders needs one)",
    "403": "PERMISSION_DENIED: the signed-in customer may not do this (another customer's orders, CUSTOMER_MISMATCH)",
    "404": "NOT_FOUND: what the request names does not exist (or no route has this path)",
    "409": "ALREADY_EXISTS or ABORTED: the request conflicts with what is stored",
    "429": "RESOURCE_EXHAUSTED: too many requests",
    "503": "UNAVAILABLE: a service is down or overloaded; safe to retry where the operation is idempotent",
    "504": "DEADLINE_EXCEEDED: the operation did not finish in time",
}


def _errors(operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    error = responses.pop("default")
    for status, meaning in ERRORS.items():
        responses[status] = {**error, "description": f"{meaning}. The body is a google.rpc.Status."}


def finish(document: dict[str, Any]) -> dict[str, Any]:
    _finish(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            _errors(operation)
    document["info"]["description"] = DESCRIPTION
    document["servers"] = [{"url": "/", "description": "the Envoy edge that serves this document"}]
    return document


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    document = finish(yaml.safe_load(source.read_text()))
    out.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
