#!/usr/bin/env python3
"""Capture the raw ClientHello a TLS client sends: listen on 127.0.0.1:PORT, accept one
connection, read TLS handshake records until the ClientHello message they carry is whole,
write exactly those records' bytes to OUT, and close (the client then fails its handshake,
which is expected).

    python3 capture.py PORT OUT
"""
import socket
import sys


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise SystemExit(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    with socket.create_server(("127.0.0.1", port)) as server:
        conn, _ = server.accept()
        with conn:
            raw, message = b"", b""
            while len(message) < 4 or len(message) < 4 + int.from_bytes(message[1:4], "big"):
                header = read_exact(conn, 5)
                if header[0] != 22:
                    raise SystemExit(f"not a handshake record: {header.hex()}")
                payload = read_exact(conn, int.from_bytes(header[3:5], "big"))
                raw += header + payload
                message += payload
    with open(out, "wb") as f:
        f.write(raw)
    print(f"{out}: {len(raw)} bytes, handshake message {len(message)} bytes")


if __name__ == "__main__":
    main()
