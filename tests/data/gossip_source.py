"""A foreign ZeroMQ sender (pyzmq) in Butterfly's pattern: a fresh PUSH socket per peer per
round, one message each (`<tag> <round> <endpoint>`), closed at once and left to linger
until delivered. Prints `sent N` on stderr when every socket has delivered or given up.

usage: gossip_source.py TAG ROUNDS INTERVAL_MS ENDPOINT..."""
import sys
import time

import zmq

tag, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
endpoints = sys.argv[4:]
ctx = zmq.Context()
sent = 0
for r in range(rounds):
    for ep in endpoints:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 20000)
        # Retry a refused connect quickly: the gap the tests measure is not ours.
        sock.setsockopt(zmq.RECONNECT_IVL, 5)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5)
        sock.connect(ep)
        sock.send(f"{tag} {r} {ep}".encode())
        sock.close()
        sent += 1
    if interval:
        time.sleep(interval)
ctx.term()
print(f"sent {sent}", file=sys.stderr, flush=True)
