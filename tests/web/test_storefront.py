"""The storefront (web/) in a real browser, on the session's stack.

The journeys are TypeScript (web/e2e/journeys.test.ts, node's test runner with
playwright-core driving Debian's chromium, one browser for all of them); this
module starts them against the stack conftest.py runs, with every inventory
implementation reachable by pinning. Each journey signs in with a token of its
own from the stack's local issuer (Stack.token(); operators' tokens for the
pinned journeys), and reaches the internal listener with the operator's
certificate. A failing journey leaves a screenshot and the browser console in
.tmp/web-e2e/, named in the failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
from shopstack.stack import Stack
from shopstack.topology import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / ".tmp" / "web-e2e"
# More than the journeys use: each takes its own.
TOKENS_EACH = 12


def test_storefront_journeys_in_chromium(stack: Stack) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    tokens = {
        "customers": [stack.token(f"web-{uuid.uuid4()}") for _ in range(TOKENS_EACH)],
        "operators": [stack.operator_token(f"web-op-{uuid.uuid4()}") for _ in range(TOKENS_EACH)],
        # Longer than a customer id may be: the checkout shows the BadRequest.
        "longCustomer": stack.token("x" * 200),
    }
    env = {
        **os.environ,
        "SHOP_PUBLIC_URL": f"https://{stack.public_addr}",
        "SHOP_INTERNAL_URL": f"https://{stack.internal_addr}",
        "SHOP_CERTS_DIR": str(stack.certs.directory),
        "NODE_EXTRA_CA_CERTS": str(stack.certs.ca),
        "SHOP_WEB_TOKENS": json.dumps(tokens),
        "SHOP_INVENTORY_IMPLS": ",".join(sorted(stack.routing["inventory"])),
        "SHOP_WEB_ARTIFACTS": str(ARTIFACTS),
        "SHOP_CHROMIUM": CHROMIUM,
    }
    result = subprocess.run(
        ["npm", "run", "--silent", "e2e"],
        cwd=ROOT / "web",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    # Node's TAP output: one "ok"/"not ok" line per journey.
    journeys = [line.strip() for line in output.splitlines() if line.lstrip().startswith(("ok ", "not ok "))]
    assert journeys, f"no journey ran:\n{output}"
    assert result.returncode == 0, "a journey failed:\n" + "\n".join(journeys) + "\n\n" + output
