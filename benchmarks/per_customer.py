"""Benchmark: the per-customer listings alone (contacts and payment sources), read by the
project's client and shaped, without Dagster, against the emulator; and the same requests made
by bare `requests` sessions on as many threads as there are slots.

Prints requests/s for each, and the least time every object's full load could take at that rate
(its 11,617 requests at scale 5, if nothing else took any time): the ceiling the emulator and
HTTP on this machine put on `--objects all` in `full_load.py`.

    python benchmarks/per_customer.py --scale 5 --latency-ms 100
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_load

EVERY_OBJECT_REQUESTS_AT_SCALE_5 = 11_617


def project_rate(url: str, in_flight: int) -> tuple[int, float]:
    """(requests, seconds) of the contacts and payment sources reads after the customers'."""
    from invoiced_assets.api import ClientSettings, InvoicedClient
    from invoiced_assets.catalogue import get_object
    from invoiced_assets.extract.listings import ReadPlan
    from invoiced_assets.extract.scheduling import extract_concurrently

    settings = ClientSettings(api_key=full_load.API_KEY, base_url=url, max_in_flight=in_flight)
    client = InvoicedClient(settings)
    names = ("customers", "contacts", "payment_sources")
    plans = [ReadPlan(get_object(name), frozenset({name})) for name in names]
    started, ended, requests_made = time.perf_counter(), {}, 0
    for extraction in extract_concurrently(client, plans, log=lambda line: None):
        if extraction.error is not None:
            raise SystemExit(f"{extraction.plan.obj.name}: {extraction.error}")
        ended[extraction.plan.obj.name] = time.perf_counter() - started
        if extraction.plan.obj.per_customer:
            requests_made += extraction.stats.requests
    span = max(ended["contacts"], ended["payment_sources"]) - ended["customers"]
    return requests_made, span


def bare_rate(url: str, threads: int) -> tuple[int, float]:
    """(requests, seconds) of one contacts request per customer, on `threads` bare sessions."""
    customers = [
        customer["id"] for customer in full_load.emulator_json(url, "/_emulator/records/customers")
    ]
    work, lock = iter(customers * 2), threading.Lock()

    def fetch() -> None:
        session = requests.Session()
        session.auth = (full_load.API_KEY, "")
        while True:
            with lock:
                customer = next(work, None)
            if customer is None:
                return
            session.get(f"{url}/customers/{customer}/contacts", timeout=60).json()

    started = time.perf_counter()
    workers = [threading.Thread(target=fetch) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return 2 * len(customers), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=5)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--in-flight", type=int, default=16, help="the client's default: 16")
    args = parser.parse_args()
    emulator, url = full_load.start_emulator(args.scale, args.latency_ms)
    try:
        print(f"scale {args.scale:g}, latency {args.latency_ms:g} ms, {args.in_flight} in flight")
        print(f"  machine            {full_load.machine_seconds():.2f} s for a fixed Python loop")
        ideal = args.in_flight / (args.latency_ms / 1000) if args.latency_ms else float("inf")
        for label, (made, seconds) in (
            ("project's client", project_rate(url, args.in_flight)),
            ("bare requests", bare_rate(url, args.in_flight)),
        ):
            rate = made / seconds
            floor = EVERY_OBJECT_REQUESTS_AT_SCALE_5 / rate
            print(
                f"  {label:<18} {made:,} requests in {seconds:.2f} s: {rate:.1f} requests/s "
                f"({rate / ideal:.0%} of {ideal:.0f}); every object at scale 5: >= {floor:.1f} s"
            )
    finally:
        emulator.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
