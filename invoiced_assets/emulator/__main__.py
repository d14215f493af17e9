"""Command line: run the Invoiced emulator until SIGINT/SIGTERM.

    python -m invoiced_assets.emulator --port 8765 --scale 1 --seed 1

Prints exactly one line, ``Invoiced emulator listening on http://127.0.0.1:PORT``, once the
server accepts connections (with ``--port 0`` the port is chosen freely, so callers parse it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from invoiced_assets.emulator.server import (
    FAULT_KINDS,
    EmulatorServer,
    FaultConfig,
    require_loopback,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m invoiced_assets.emulator",
        description="Serve a deterministic synthetic Invoiced account on 127.0.0.1.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="loopback address to bind (only 127.0.0.1 is allowed)")
    add("--port", type=int, default=8765, help="TCP port; 0 picks a free one (default 8765)")
    add("--scale", type=float, default=1.0, help="data volume; 1 = ~1,000 customers (default 1)")
    add("--seed", type=int, default=1, help="seed of the generated data (default 1)")
    add(
        "--api-key", default="emulator-key", help="API key clients must send (default emulator-key)"
    )
    add("--latency-ms", type=float, default=0, help="sleep added to every API request (default 0)")
    add(
        "--fault-rate", type=float, default=0, help="fraction of API requests that fail (default 0)"
    )
    add(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated faults to draw from (default all: {','.join(FAULT_KINDS)})",
    )
    add(
        "--retry-after", type=float, default=1, help="Retry-After seconds of 429_retry_after faults"
    )
    add("--max-in-flight", type=int, default=20, help="concurrent requests per key before 429")
    add("--fault-seed", type=int, default=0, help="seed of the fault dice (default 0)")
    return parser


def faults_from(args: argparse.Namespace) -> FaultConfig:
    kinds = tuple(kind.strip() for kind in args.fault_kinds.split(",") if kind.strip())
    return FaultConfig(
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        fault_kinds=kinds,
        retry_after_seconds=args.retry_after,
        max_in_flight=args.max_in_flight,
        fault_seed=args.fault_seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host = require_loopback(args.host)
        faults = faults_from(args)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2 and the usage
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = EmulatorServer(
        scale=args.scale, seed=args.seed, api_key=args.api_key, host=host, port=args.port,
        faults=faults,
    )  # fmt: skip
    server.start()
    print(f"Invoiced emulator listening on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run promptly
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
