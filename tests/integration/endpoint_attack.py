"""The attackers of ``test_endpoint_load``, in a process of their own (one per endpoint).

``python -m tests.integration.endpoint_attack CONFIG_JSON`` starts 50 slow clients and 50 clients
sending 8 MiB bodies against one endpoint, prints ``connected`` once every slow client has
connected, keeps attacking until its stdin closes, lets every slow round end, and prints one JSON
line of results. A process apart from the test's: ~100 busy client threads would otherwise
share the test's GIL with the normal review it times, and the figure would be the client's.

Slow clients: one third send one byte a second of a request (after the TLS handshake on the
webhook), one third connect and say nothing (no TLS hello), one third finish the handshake and
then say nothing. Each one, once cut by the server, connects again. Big clients: the head of a
request with ``Content-Length: 8 MiB``, then the body, at most once a second each.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CLIENTS = 50
BIG = 8 * 1024 * 1024
KINDS = ("dribble", "silent", "silent-tls")


@dataclass
class Target:
    port: int
    cafile: str | None
    deadline: float
    give_up: float  # seconds after which a slow round still open counts as not cut
    big_request: bytes
    slow_request: bytes
    cuts: list[float] = field(default_factory=list)  # seconds from connect to the server's close
    uncut: list[str] = field(default_factory=list)
    big: list[tuple[float, str]] = field(default_factory=list)  # (seconds, how it ended)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, *, handshake: bool = True) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=30)
        if self.cafile is not None and handshake:
            context = ssl.create_default_context(cafile=self.cafile)
            return context.wrap_socket(sock, server_hostname=HOST)
        return sock


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closed (or reset) the connection within ``wait`` seconds."""
    readable, _, _ = select.select([sock], [], [], max(wait, 0))
    if not readable:
        return False
    try:
        while sock.recv(65536):
            pass  # an answer the server sent before closing; read to the end
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        pass
    return True


def slow_client(target: Target, kind: str, connected: threading.Semaphore, stop: threading.Event) -> None:
    first = True
    while first or not stop.is_set():
        started = time.monotonic()
        give_up = started + target.give_up
        try:
            sock = target.connect(handshake=kind != "silent")
        except OSError as exc:
            with target.lock:
                target.uncut.append(f"{kind}: connect failed: {exc}")
            return
        if first:
            connected.release()
            first = False
        with sock:
            cut, sent = False, 0
            while time.monotonic() < give_up:
                # One byte a second: the wait for the server's close is the pacing.
                if closed_by_server(sock, min(1.0, give_up - time.monotonic())):
                    cut = True
                    break
                if kind == "dribble":
                    at = sent % len(target.slow_request)
                    try:
                        sock.send(target.slow_request[at : at + 1])
                    except OSError:
                        cut = True
                        break
                    sent += 1
            elapsed = time.monotonic() - started
        with target.lock:
            if cut:
                target.cuts.append(elapsed)
            else:
                target.uncut.append(f"{kind}: still open after {elapsed:.1f} s")


def big_client(target: Target, stop: threading.Event, body: bytes) -> None:
    while not stop.is_set():
        started = time.monotonic()
        outcome = "closed"
        try:
            with target.connect() as sock:
                sock.sendall(target.big_request)
                try:
                    sock.sendall(body)
                    outcome = "sent whole"
                except OSError:
                    pass  # the server closed before taking the body: what is expected
                readable, _, _ = select.select([sock], [], [], target.give_up)
                if readable:
                    status = sock.recv(64).split(b" ")[1:2]
                    if status:
                        outcome = status[0].decode()
        except OSError as exc:
            if outcome == "closed":
                outcome = f"closed ({type(exc).__name__})"
        elapsed = time.monotonic() - started
        with target.lock:
            target.big.append((elapsed, outcome))
        stop.wait(max(0.0, 1.0 - elapsed))  # pacing: one attempt a second per client


def main(config: str) -> None:
    # Below the server and the test's own client: on a 2-core machine, the attackers' CPU (TLS
    # encryption of 8 MiB bodies) would otherwise starve both, and the figures would measure the
    # machine, not the server. A real attacker is on other machines; the attack's shape (how many
    # connections, how big, how slow) is unchanged.
    os.nice(10)
    c = json.loads(config)
    target = Target(
        port=c["port"],
        cafile=c["cafile"],
        deadline=c["deadline"],
        give_up=c["give_up"],
        big_request=c["big_request"].encode(),
        slow_request=c["slow_request"].encode(),
    )
    stop = threading.Event()
    connected = threading.Semaphore(0)
    body = b"[" + b"{}," * (BIG // 3 - 1) + b"{}]"
    threads = [
        threading.Thread(target=slow_client, args=(target, KINDS[i % 3], connected, stop), daemon=True)
        for i in range(CLIENTS)
    ]
    threads += [
        threading.Thread(target=big_client, args=(target, stop, body), daemon=True) for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for _ in range(CLIENTS):
        if not connected.acquire(timeout=60):
            break
    print("connected", flush=True)
    sys.stdin.read()  # until the test closes it
    stop.set()
    for thread in threads:
        thread.join(timeout=target.give_up + 30)
    alive = sum(t.is_alive() for t in threads)
    print(
        json.dumps({"cuts": target.cuts, "uncut": target.uncut, "big": target.big, "threads_alive": alive}),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
