"""Property-based tests of the JSON API against its OpenAPI document (schemathesis).

For every operation in protos/gen/openapi.json, schemathesis generates
requests from the schema (valid ones and, in its coverage phase, the
boundaries and invalid ones) and sends them to the session stack's edge. Each
answer must be: no 5xx, a status code the document lists, and a body that
matches the documented schema (the operation's response, or google.rpc.Status
for an error). The run is bounded (max_examples per operation) and
deterministic (a fixed seed, no example database), so a failure reproduces.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from shopstack.stack import Stack
from shopstack.topology import ROOT

# Bounded and deterministic: the same requests on every run.
MAX_EXAMPLES = 15
SEED = 17

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # Stateful links are not declared in the document; each operation is tested alone.
        "phases": {"stateful": {"enabled": False}},
    }
)
# What the issue asks of every answer: no 5xx, a documented status code and
# content type, and a body that matches the documented schema. (Not checked:
# that the service accepts every schema-valid request. The document carries
# the types, not the bounds that the proto comments state, such as page_size
# 0 to 100, so a valid-looking request may rightly be INVALID_ARGUMENT.)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
SCHEMA = schemathesis.openapi.from_path(ROOT / "protos" / "gen" / "openapi.json", config=CONFIG)


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_json_operation_answers_as_its_document_says(case: schemathesis.Case, stack: Stack) -> None:
    # As a signed-in customer would call it: TLS trusting the stack's CA, a token.
    case.call_and_validate(
        base_url=f"https://{stack.public_addr}",
        timeout=15,
        verify=str(stack.certs.ca),
        headers={"authorization": f"Bearer {stack.token('schemathesis')}"},
        checks=CHECKS,
    )
