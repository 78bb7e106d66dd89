"""The storefront (web/) in a real browser, on the session's stack.

The journeys are TypeScript (web/e2e/journeys.test.ts, node's test runner with
playwright-core driving Debian's chromium, one browser for all of them); this
module starts them against the stack conftest.py runs, with every inventory
implementation reachable by pinning. A failing journey leaves a screenshot and
the browser console in .tmp/web-e2e/, named in the failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from shopstack.stack import Stack
from shopstack.topology import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / ".tmp" / "web-e2e"


def test_storefront_journeys_in_chromium(stack: Stack) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    env = {
        **os.environ,
        "SHOP_PUBLIC_URL": f"http://{stack.public_addr}",
        "SHOP_INTERNAL_URL": f"http://{stack.internal_addr}",
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
