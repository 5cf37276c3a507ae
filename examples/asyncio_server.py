"""One asyncio process serving three rings and a TCP socket, with no thread
per wait: every ring is awaited through its handle's event descriptor
(``async for msg in rx``), the socket through asyncio's streams, all on one
loop.

Each message from a ring is forwarded, as a line ``<ring> <message>``, to
every TCP client connected; a client that sends ``stats`` gets the counts so
far. When all three producers have closed their rings (end of stream), the
server sends ``END`` to its clients and stops.

    python asyncio_server.py jobs logs metrics --port 7000   # rings made by others
    python asyncio_server.py --self-test                      # makes rings and a client

--self-test creates three rings (SPSC, MPMC, SPSC), starts a producer thread
per ring and a TCP client, and checks that the client received every message
of every ring, in order per ring.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import uuid

import shmring


class Server:
    def __init__(self, consumers: dict[str, object]) -> None:
        self.consumers = consumers
        self.counts = {name: 0 for name in consumers}
        self.clients: set[asyncio.StreamWriter] = set()
        self.done = asyncio.Event()

    async def forward(self, name: str, rx) -> None:
        # Ends when the ring's producer closes it (shmring.EndOfStream ends
        # `async for`); a producer that dies raises shmring.PeerDeadError.
        async for msg in rx:
            self.counts[name] += 1
            line = name.encode() + b" " + msg + b"\n"
            for w in list(self.clients):
                w.write(line)
        print(f"{name}: end of stream after {self.counts[name]} messages", flush=True)

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        try:
            while not reader.at_eof():
                line = await reader.readline()
                if line.strip() == b"stats":
                    stats = " ".join(f"{n}={c}" for n, c in self.counts.items())
                    writer.write(f"STATS {stats}\n".encode())
        finally:
            self.clients.discard(writer)

    async def run(self, host: str, port: int, ready: asyncio.Future | None = None) -> None:
        server = await asyncio.start_server(self.client, host, port)
        bound = server.sockets[0].getsockname()[1]
        print(f"serving {', '.join(self.consumers)} on {host}:{bound}", flush=True)
        if ready is not None:
            ready.set_result(bound)
        async with server:
            await asyncio.gather(*(self.forward(n, rx) for n, rx in self.consumers.items()))
            for w in list(self.clients):
                w.write(b"END\n")
                await w.drain()
                w.close()


def produce(seg, ring: str, total: int) -> threading.Thread:
    def body() -> None:
        tx = seg.producer()
        for i in range(total):
            tx.push(f"{ring}-{i}".encode(), timeout=10.0)
        tx.close()  # a producer's close ends the stream

    t = threading.Thread(target=body)
    t.start()
    return t


async def self_test(total: int) -> int:
    tag = uuid.uuid4().hex[:8]
    kinds = {"jobs": "spsc", "logs": "mpmc", "metrics": "spsc"}
    segs = {
        ring: shmring.create(f"asyncio-demo-{ring}-{os.getpid()}-{tag}", kind=kind, capacity=16,
                             slot_size=64, unlink_on_close=True)
        for ring, kind in kinds.items()
    }
    server = Server({ring: seg.consumer() for ring, seg in segs.items()})
    ready = asyncio.get_running_loop().create_future()
    serving = asyncio.ensure_future(server.run("127.0.0.1", 0, ready))
    port = await ready
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"stats\n")
    stats = int((await reader.readline()).startswith(b"STATS jobs=0 logs=0 metrics=0"))
    threads = [produce(seg, ring, total) for ring, seg in segs.items()]
    seen = {ring: [] for ring in kinds}
    while True:
        line = (await reader.readline()).decode().rstrip("\n")
        if line == "END" or not line:
            break
        if line.startswith("STATS "):
            stats += 1
            continue
        ring, msg = line.split(" ", 1)
        seen[ring].append(msg)
    await serving
    for t in threads:
        t.join()
    for seg in segs.values():
        seg.close()
    ok = stats == 1 and all(seen[r] == [f"{r}-{i}" for i in range(total)] for r in kinds)
    print("self-test passed" if ok else f"self-test FAILED: {({r: len(v) for r, v in seen.items()})}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rings", nargs="*", help="names of three (or any number of) rings")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--messages", type=int, default=2000, help="per ring, in --self-test")
    args = parser.parse_args()
    if args.self_test:
        return asyncio.run(self_test(args.messages))
    if not args.rings:
        parser.error("name the rings to serve, or pass --self-test")
    consumers = {name: shmring.open(name).consumer() for name in args.rings}
    asyncio.run(Server(consumers).run(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
