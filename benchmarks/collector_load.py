"""The collector's load generator, run as a process of its own (``benchmarks.collector``).

    python -m benchmarks.collector_load --url http://127.0.0.1:8088 --key K throughput
    python -m benchmarks.collector_load --url ... --key K latency --rate 1000

``throughput``: a few connections post batches of 100 as fast as the collector answers;
events/s is what was answered 200 (Kafka confirmed every one). ``latency``: single-event
requests opened at a fixed rate whatever the answers (open loop), each timed from when it
was due, so a stall shows in the percentiles instead of slowing the load. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import uuid
from typing import Any

import aiohttp
import uvloop


def message(index: int, run: str) -> dict[str, Any]:
    kind = index % 10
    base: dict[str, Any] = {
        "messageId": f"{run}-{index}",
        "anonymousId": f"anon-{index % 5000}",
        "timestamp": "2026-12-01T10:00:00.000Z",
        "context": {
            "page": {
                "url": "https://shop.example/category/baking/cakes",
                "path": "/category/baking/cakes",
            }
        },
    }
    if kind < 6:
        return {**base, "type": "page", "properties": {"title": "Cakes"}}
    if kind < 8:
        return {
            **base,
            "type": "track",
            "event": "Product Viewed",
            "properties": {"product_id": f"p-{index % 300}", "category": "baking"},
        }
    if kind == 8:
        return {
            **base,
            "type": "track",
            "event": "Brochure Requested",
            "properties": {"region": "north"},
        }
    return {
        **base,
        "type": "identify",
        "userId": f"u-{index % 2000}",
        "traits": {"email": f"user{index % 2000}@example.com", "first_name": "Ann"},
    }


def batches(count: int, size: int, run: str) -> list[bytes]:
    return [
        json.dumps(
            {
                "batch": [message(b * size + i, run) for i in range(size)],
                "sentAt": "2026-12-01T10:00:00.100Z",
            }
        ).encode()
        for b in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def throughput(
    url: str, headers: dict[str, str], seconds: float, concurrency: int, size: int
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    bodies = batches(200, size, run)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    accepted = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), headers=headers
    ) as session:
        deadline = time.perf_counter() + seconds

        async def sender(offset: int) -> None:
            nonlocal accepted
            index = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(f"{url}/v1/batch", data=bodies[index % len(bodies)]) as r:
                    answer = await r.json()
                latencies.append(time.perf_counter() - started)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 200:
                    accepted += answer["accepted"]
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "batch_size": size,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "accepted_events": accepted,
        "events_per_s": round(accepted / elapsed),
        "statuses": statuses,
        "request_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "request_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


async def latency(url: str, headers: dict[str, str], seconds: float, rate: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    count = int(seconds * rate)
    bodies = [json.dumps(message(i, run)).encode() for i in range(count)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers=headers
    ) as session:

        async def one(body: bytes, due: float) -> None:
            try:
                async with session.post(f"{url}/v1/track", data=body) as r:
                    await r.read()
                status = str(r.status)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1

        tasks = []
        start = time.perf_counter() + 0.1
        late = 0.0
        for index, body in enumerate(bodies):
            due = start + index / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = max(late, -wait)
            tasks.append(asyncio.create_task(one(body, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "target_requests_per_s": rate,
        "requests": count,
        "achieved_requests_per_s": round(count / elapsed),
        "statuses": statuses,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "generator_max_lateness_ms": round(late * 1000, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True, help="a write key of the collector")
    parser.add_argument("--seconds", type=float, default=10.0)
    sub = parser.add_subparsers(dest="mode", required=True)
    load = sub.add_parser("throughput")
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--batch-size", type=int, default=100)
    timed = sub.add_parser("latency")
    timed.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args(argv)
    headers = {"Authorization": "Basic " + base64.b64encode(f"{args.key}:".encode()).decode()}
    # uvloop, as the collector: the generator must not be what falls behind.
    if args.mode == "throughput":
        result = uvloop.run(
            throughput(args.url, headers, args.seconds, args.concurrency, args.batch_size)
        )
    else:
        result = uvloop.run(latency(args.url, headers, args.seconds, args.rate))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
