"""The client packages, used the way someone outside the repository would.

For each language a tiny client is built in a temporary directory that
depends only on the shop's package for that language (and the language's
gRPC runtime): it calls the session stack's edge, reads a product, then asks
for one that does not exist and prints the google.rpc.ErrorInfo the error
carries. `make clients` builds the packages; `make test-clients` runs this.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
from shopstack.stack import Stack
from shopstack.topology import ROOT

# What every tiny client prints last: the error's code, then its ErrorInfo.
EXPECTED_ERROR = "PRODUCT_NOT_FOUND catalog.shop.example"


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} failed in {cwd}:\n{output}"
    return result.stdout


def expected_name(stack: Stack) -> str:
    """The product's name, as the JSON API gives it."""
    reply = httpx.get(
        f"https://{stack.public_addr}/v1/products/sku-tote-bag",
        timeout=10,
        verify=ssl.create_default_context(cafile=str(stack.certs.ca)),
    )
    return str(reply.json()["product"]["name"])


def check_output(stdout: str, stack: Stack, code: str) -> None:
    lines = stdout.strip().splitlines()
    assert lines == [expected_name(stack), f"{code} {EXPECTED_ERROR}"], stdout


def test_python_package_installs_with_pip_and_reads_an_error_info(stack: Stack, tmp_path: Path) -> None:
    python = shutil.which("python3")
    assert python, "python3 is not on PATH"
    run([python, "-m", "venv", str(tmp_path / "venv")], tmp_path)
    pip = str(tmp_path / "venv" / "bin" / "pip")
    # The package from the repository path; its dependencies at the versions the repo pins.
    lock = ROOT / "python_services" / "requirements.lock"
    run(
        [pip, "install", "--quiet", "--disable-pip-version-check", "-c", str(lock), str(ROOT / "clients" / "python")],
        tmp_path,
    )
    (tmp_path / "client.py").write_text(
        textwrap.dedent(
            """\
            import sys

            import grpc
            from google.rpc import error_details_pb2
            from grpc_status import rpc_status
            from shop.catalog.v1 import catalog_service_pb2 as catalog
            from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc

            # The edge is TLS: trust the stack's CA (sys.argv[2]).
            with open(sys.argv[2], "rb") as ca:
                credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
            with grpc.secure_channel(sys.argv[1], credentials) as channel:
                stub = catalog_grpc.CatalogServiceStub(channel)
                print(stub.GetProduct(catalog.GetProductRequest(product_id="sku-tote-bag"), timeout=10).product.name)
                try:
                    stub.GetProduct(catalog.GetProductRequest(product_id="sku-nope"), timeout=10)
                except grpc.RpcError as err:
                    for detail in rpc_status.from_call(err).details:
                        info = error_details_pb2.ErrorInfo()
                        if detail.Unpack(info):
                            print(err.code().name, info.reason, info.domain)
            """
        )
    )
    check_output(
        run([str(tmp_path / "venv" / "bin" / "python"), "client.py", stack.public_addr, str(stack.certs.ca)], tmp_path),
        stack,
        "NOT_FOUND",
    )
    # The type stubs come with it.
    stubs = run(
        [
            str(tmp_path / "venv" / "bin" / "python"),
            "-c",
            "import shop.catalog.v1.catalog_service_pb2 as m; print(m.__file__)",
        ],
        tmp_path,
    )
    assert Path(stubs.strip()).with_suffix(".pyi").exists(), stubs


def test_go_module_is_importable_with_a_replace_directive(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text(
        textwrap.dedent(
            f"""\
            module example.com/shopclient

            go 1.26.0

            require github.com/polyglot-shop/shop/go_service/gen v0.0.0-00010101000000-000000000000

            replace github.com/polyglot-shop/shop/go_service/gen => {ROOT / "go_service" / "gen"}
            """
        )
    )
    (tmp_path / "main.go").write_text(
        textwrap.dedent(
            """\
            package main

            import (
            \t"context"
            \t"fmt"
            \t"os"
            \t"time"

            \tcatalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
            \t"google.golang.org/genproto/googleapis/rpc/errdetails"
            \t"google.golang.org/grpc"
            \t"google.golang.org/grpc/credentials"
            \t"google.golang.org/grpc/status"
            )

            func main() {
            \t// The edge is TLS: trust the stack's CA (os.Args[2]).
            \ttlsCreds, err := credentials.NewClientTLSFromFile(os.Args[2], "")
            \tif err != nil {
            \t\tpanic(err)
            \t}
            \tconn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(tlsCreds))
            \tif err != nil {
            \t\tpanic(err)
            \t}
            \tdefer conn.Close()
            \tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
            \tdefer cancel()
            \tcatalog := catalogv1.NewCatalogServiceClient(conn)
            \tok, err := catalog.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: "sku-tote-bag"})
            \tif err != nil {
            \t\tpanic(err)
            \t}
            \tfmt.Println(ok.GetProduct().GetName())
            \t_, err = catalog.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: "sku-nope"})
            \tst := status.Convert(err)
            \tfor _, detail := range st.Details() {
            \t\tif info, ok := detail.(*errdetails.ErrorInfo); ok {
            \t\t\tfmt.Println(st.Code().String(), info.GetReason(), info.GetDomain())
            \t\t}
            \t}
            }
            """
        )
    )
    env = {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    run(["go", "mod", "tidy"], tmp_path, env)
    check_output(run(["go", "run", ".", stack.public_addr, str(stack.certs.ca)], tmp_path, env), stack, "NotFound")


def test_npm_package_works_with_connect_and_reads_an_error_info(stack: Stack, tmp_path: Path) -> None:
    packed = run(
        ["npm", "pack", "--silent", "--pack-destination", str(tmp_path), str(ROOT / "clients" / "npm")], tmp_path
    )
    tarball = packed.strip().splitlines()[-1]
    connect = _pinned("@connectrpc/connect")
    (tmp_path / "package.json").write_text(
        textwrap.dedent(
            f"""\
            {{
              "name": "shop-tiny-client",
              "private": true,
              "type": "module",
              "dependencies": {{
                "@shop/api": "file:./{tarball}",
                "@connectrpc/connect": "{connect}",
                "@connectrpc/connect-node": "{connect}"
              }}
            }}
            """
        )
    )
    (tmp_path / "client.mjs").write_text(
        textwrap.dedent(
            """\
            import { readFileSync } from "node:fs";
            import { Code, ConnectError, createClient } from "@connectrpc/connect";
            import { createGrpcTransport } from "@connectrpc/connect-node";
            import { CatalogService } from "@shop/api/shop/catalog/v1/catalog_service_pb";
            import { ErrorInfoSchema } from "@shop/api/google/rpc/error_details_pb";

            // The edge is TLS: trust the stack's CA (process.argv[3]).
            const transport = createGrpcTransport({
              baseUrl: `https://${process.argv[2]}`,
              nodeOptions: { ca: readFileSync(process.argv[3]) },
            });
            const catalog = createClient(CatalogService, transport);
            const ok = await catalog.getProduct({ productId: "sku-tote-bag" }, { timeoutMs: 10000 });
            console.log(ok.product?.name);
            try {
              await catalog.getProduct({ productId: "sku-nope" }, { timeoutMs: 10000 });
            } catch (err) {
              const error = ConnectError.from(err);
              for (const info of error.findDetails(ErrorInfoSchema)) {
                console.log(Code[error.code], info.reason, info.domain);
              }
            }
            """
        )
    )
    run(["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], tmp_path)
    check_output(run(["node", "client.mjs", stack.public_addr, str(stack.certs.ca)], tmp_path), stack, "NotFound")


def _pinned(package: str) -> str:
    version = json.loads((ROOT / "clients" / "npm" / "package.json").read_text())["dependencies"].get(package)
    if not version:
        pytest.fail(f"clients/npm/package.json does not pin {package}")
    return str(version)
