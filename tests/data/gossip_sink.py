"""A foreign ZeroMQ receiver (pyzmq): a PULL socket bound on ENDPOINT, one stderr line per
message: `got <CLOCK_MONOTONIC seconds> <Peer-Address> <payload>`. The tests read from it
who delivered each message (the proxy, from the member's own address, or the peer
directly) and when, on the same clock as the test's own Instant."""
import sys
import time

import zmq

ctx = zmq.Context()
sock = ctx.socket(zmq.PULL)
sock.bind(sys.argv[1])
print(f"listening endpoint={sys.argv[1]}", file=sys.stderr, flush=True)
while True:
    frame = sock.recv(copy=False)
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    peer = frame.get("Peer-Address")
    payload = frame.bytes.decode(errors="replace")
    print(f"got {now:.6f} {peer} {payload}", file=sys.stderr, flush=True)
