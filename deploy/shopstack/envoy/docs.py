"""The API's documentation on the public listener, served by Envoy itself.

- GET /openapi.json (also /v1/openapi.json): the OpenAPI 3 document of the
  JSON API that `make protos` writes from the protos' google.api.http rules;
- GET /docs: a page that renders it with swagger-ui, whose files come from the
  npm-pinned swagger-ui-dist package (tools/package.json), never from a CDN.

Envoy answers these with direct responses read from the files when it loads
the routes, so there is no extra process to run.
"""

from __future__ import annotations

from typing import Any

from shopstack.envoy.common import DOCS_FILES, Mode

OPENAPI_PATHS = ("/openapi.json", "/v1/openapi.json")
DOCS_PATH = "/docs"
# Direct responses are capped at 4 KiB unless the route configuration says
# otherwise; swagger-ui's bundle is about 1.7 MB.
MAX_BODY_BYTES = 4 * 1024 * 1024

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>The shop's JSON API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="api"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#api"});
  </script>
</body>
</html>
"""


def _file(name: str, path: str, filename: str, content_type: str) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": {"filename": filename}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }


def routes(mode: Mode) -> list[dict[str, Any]]:
    """The routes that serve the document and the page that renders it."""
    entries = [_file(f"openapi document {path}", path, mode.openapi, "application/json") for path in OPENAPI_PATHS]
    entries.append(
        {
            "name": "openapi page",
            "match": {"path": DOCS_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "direct_response": {"status": 200, "body": {"inline_string": _PAGE}},
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "text/html; charset=utf-8"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
    )
    for filename, content_type in DOCS_FILES.items():
        entries.append(
            _file(f"openapi page {filename}", f"{DOCS_PATH}/{filename}", f"{mode.docs_assets}/{filename}", content_type)
        )
    return entries
