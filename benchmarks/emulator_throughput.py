"""How many ImportVmImage calls per second the emulator serves on one core.

The emulator runs as a child process pinned to core 0 (``taskset`` when available); the
load comes from client processes on the other cores, each sending lean raw aiohttp
requests (a fixed SigV4-shaped Authorization header, unique names) over keep-alive
connections, so that the client, not the server, is cheap. Every call must succeed.

    .venv/bin/python benchmarks/emulator_throughput.py [--seconds 5] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import time
import uuid

import aiohttp

from ibimport.emulator import EmulatorConfig, EmulatorProcess

AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDBENCHMARK/20250101/us-east-1/imagebuilder/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


async def _drive(url: str, *, seconds: float, concurrency: int, prefix: str) -> tuple[int, int]:
    """Send ImportVmImage calls for ``seconds``; return (successes, failures)."""
    headers = {"Authorization": AUTHORIZATION, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    ok = failed = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(worker_id: int) -> None:
            nonlocal ok, failed
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                body = json.dumps(
                    {
                        "name": f"bench-{prefix}-{worker_id}-{n}",
                        "semanticVersion": "1.0.0",
                        "platform": "Linux",
                        "osVersion": "Ubuntu 22.04",
                        "vmImportTaskId": f"import-ami-{worker_id}-{n}",
                        "clientToken": f"{prefix}-{worker_id}-{n}",
                        "tags": {"wave": "1"},
                    }
                )
                async with session.put(f"{url}/ImportVmImage", data=body) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, failed


def _client(url: str, seconds: float, concurrency: int, cpu: int | None) -> tuple[int, int]:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    return asyncio.run(
        _drive(url, seconds=seconds, concurrency=concurrency, prefix=uuid.uuid4().hex[:8])
    )


def _cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU time of a process, from /proc (Linux), to show whether it saturated."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the measured run")
    parser.add_argument(
        "--clients", type=int, default=0, help="client processes (0: one per spare core)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connections per client process"
    )
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    pin = shutil.which("taskset") is not None and cores > 1
    clients = args.clients or max(1, cores - 1)
    client_cpus = [1 + i % (cores - 1) if pin else None for i in range(clients)]
    with EmulatorProcess(EmulatorConfig(), cpus="0" if pin else None) as server:
        # Warm up (imports, first connections), then measure from a clean slate.
        _client(server.url, 0.5, 8, None)
        server.reset()
        cpu_before = _cpu_seconds(server.pid)
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            results = pool.starmap(
                _client,
                [(server.url, args.seconds, args.concurrency, cpu) for cpu in client_cpus],
            )
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_seconds(server.pid)
        stats = server.stats()
    served = stats["requests"].get("ImportVmImage", 0)
    busy = capacity = None
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        busy = round((cpu_after - cpu_before) / args.seconds, 2)
        # Calls per CPU-second of the server: what one core serves when nothing else
        # (a slow client, other load on the machine) holds it back.
        capacity = round(served / (cpu_after - cpu_before))
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    # Pool start-up is inside ``elapsed``; the clients' own window is ``args.seconds``.
    print(
        json.dumps(
            {
                "server_core_pinned": pin,
                "client_processes": clients,
                "concurrency_per_client": args.concurrency,
                "seconds": args.seconds,
                "calls_ok": ok,
                "calls_failed": failed,
                "server_counted": served,
                "images": stats["images"],
                "calls_per_s": round(ok / args.seconds),
                # Server CPU seconds per second of load: near 1.0 means the server was the limit.
                "server_core_busy": busy,
                "calls_per_server_cpu_s": capacity,
                "wall_s": round(elapsed, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
