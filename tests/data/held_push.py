"""A pyzmq PUSH connection held open across a proxy's shutdown: sends `held before`, then
waits for SIGUSR1 and sends `held after` on the same connection (ZeroMQ would reconnect,
and say so on the sink as a new peer address, if it had been reset), then closes.

usage: held_push.py ENDPOINT"""
import signal
import sys

import zmq

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
ctx = zmq.Context()
sock = ctx.socket(zmq.PUSH)
sock.setsockopt(zmq.LINGER, 20000)
sock.connect(sys.argv[1])
sock.send(b"held before")
print("sent before", file=sys.stderr, flush=True)
signal.sigwait([signal.SIGUSR1])
sock.send(b"held after")
sock.close()
ctx.term()
print("sent after", file=sys.stderr, flush=True)
