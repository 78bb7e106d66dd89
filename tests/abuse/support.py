"""A raw HTTP/2 gRPC client (h2), for framing no gRPC library will send.

A gRPC message on the wire is a 5-byte prefix (a compressed flag, 0 or 1, and
a big-endian 4-byte length) and then the message. grpc_frame() builds one with
any flag and any claimed length; call() sends frames on one stream and returns
what came back.

Every listener and service of the stack speaks TLS only: tls() makes the
client side (the stack's CA, ALPN h2, and a client certificate for the
internal listener and the services' own ports, which require mutual TLS).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import urllib.parse
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
from shopstack.pki import Certs


def grpc_frame(message: bytes, *, flag: int = 0, claimed_length: int | None = None) -> bytes:
    length = len(message) if claimed_length is None else claimed_length
    return struct.pack(">BI", flag, length) + message


def tls(certs: Certs, identity: str | None) -> ssl.SSLContext:
    """TLS trusting the stack's CA, offering only h2; with identity, its certificate as the client's."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols(["h2"])
    if identity is not None:
        pair = certs.pair(identity)
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


@dataclass
class Reply:
    """What a raw gRPC call got back."""

    http_status: str
    grpc_status: int | None
    grpc_message: str
    data: bytes
    seconds: float
    reset: bool = False

    def __str__(self) -> str:
        return (
            f"HTTP {self.http_status}, grpc-status {self.grpc_status} {self.grpc_message!r}, "
            f"{len(self.data)} data bytes, reset={self.reset}, after {self.seconds:.2f} s"
        )


def call(
    address: str,
    path: str,
    body: bytes,
    *,
    tls: ssl.SSLContext,
    metadata: tuple[tuple[str, str], ...] = (),
    end_stream: bool = True,
    timeout: float = 30.0,
) -> Reply:
    """Send body on one gRPC stream (half-closed unless end_stream is False) and read the answer."""
    host, port = address.rsplit(":", 1)
    started = time.monotonic()
    with (
        socket.create_connection((host, int(port)), timeout=timeout) as raw,
        tls.wrap_socket(raw, server_hostname=host) as sock,
    ):
        if sock.selected_alpn_protocol() != "h2":
            raise ConnectionError(f"{address} did not agree to HTTP/2 (ALPN {sock.selected_alpn_protocol()!r})")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        conn.send_headers(stream, headers)
        conn.send_data(stream, body, end_stream=end_stream)
        sock.sendall(conn.data_to_send())
        status, grpc_status, grpc_message, data, reset = "", None, "", b"", False
        done = False
        while not done:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(f"no answer to {path} on {address} within {timeout:g} s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields = dict(event.headers)
                    status = fields.get(":status", status)
                    if "grpc-status" in fields:
                        grpc_status = int(fields["grpc-status"])
                        grpc_message = urllib.parse.unquote(fields.get("grpc-message", ""))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    reset = True
                    done = True
                elif isinstance(event, (h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    done = True
            sock.sendall(conn.data_to_send())
    return Reply(status, grpc_status, grpc_message, data, time.monotonic() - started, reset)
