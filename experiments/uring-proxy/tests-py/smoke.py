import socket, threading, subprocess, time, sys, os, hashlib
BIN = sys.argv[1]
def echo_server(tag):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", 0)); l.listen(128)
    def serve(c):
        c.sendall(tag)  # identify backend
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
        c.shutdown(socket.SHUT_WR)  # half-close after client FIN
        c.close()
    def loop():
        while True:
            c, _ = l.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return l.getsockname()
z = echo_server(b"Z:"); g = echo_server(b"G:")
port = 39871
p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--zmq-backend", f"{z[0]}:{z[1]}", "--grpc-backend", f"{g[0]}:{g[1]}", "--per-core"])
time.sleep(0.3)
SIG = bytes([0xFF,0,0,0,0,0,0,0,1,0x7F]); H2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
def conv(prefix, body, bytewise=False):
    s = socket.create_connection(("127.0.0.1", port))
    if bytewise:
        for b in prefix: s.send(bytes([b])); time.sleep(0.01)
    else: s.sendall(prefix)
    def w():
        s.sendall(body); s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=w); t.start()
    out = b""
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
    t.join(); s.close(); return out
assert conv(SIG, b"hello") == b"Z:" + SIG + b"hello"
assert conv(H2, b"x"*10) == b"G:" + H2 + b"x"*10
assert conv(SIG, b"", bytewise=True) == b"Z:" + SIG
assert conv(H2, b"abc", bytewise=True) == b"G:" + H2 + b"abc"
big = os.urandom(20_000_000)
out = conv(SIG, big); assert out == b"Z:" + SIG + big, len(out)
# rejects: garbage, a 0xFF with wrong byte 9, and EOF before decision
for bad in [b"GET / HTTP/1.1\r\n\r\n", bytes([0xFF]+[0]*9), bytes([0xFF,0,0])]:
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(bad)
    if len(bad) < 10: s.shutdown(socket.SHUT_WR)
    s.settimeout(3); assert s.recv(10) == b""; s.close()
# half-close: client FIN, server keeps sending after it
# many parallel
ths = [threading.Thread(target=lambda: conv(SIG, b"y"*1000)) for _ in range(200)]
[t.start() for t in ths]; [t.join() for t in ths]
fds = len(os.listdir(f"/proc/{p.pid}/fd")); print("fds after", fds)
p.kill(); print("ok")
