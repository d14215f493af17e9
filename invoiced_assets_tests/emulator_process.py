"""The emulator in a process of its own, driven through its `/_emulator/*` control API.

Tests of the extraction's child process need it: a step forks only while it has no other thread,
and `EmulatorServer` serves from a thread of the test's process. It offers the same `url`,
`truth()`, `records()`, `mutate()` and `stats()` as `EmulatorServer`, so the warehouse
comparisons take either.
"""

import json
import re
import subprocess
import sys
import urllib.request
from typing import Any


class EmulatorProcess:
    """`python -m invoiced_assets.emulator` on a free port of 127.0.0.1, stopped on exit."""

    def __init__(self, *, scale: float, seed: int, api_key: str, latency_ms: float = 0.0) -> None:
        self._command = [
            sys.executable, "-m", "invoiced_assets.emulator", "--port", "0",
            "--scale", str(scale), "--seed", str(seed), "--api-key", api_key,
            "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> "EmulatorProcess":
        self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        match = re.search(r"http://\S+", line)
        if match is None:
            self._process.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = match.group(0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=10)

    def _control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.url}/_emulator/{path}", data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def truth(self) -> dict[str, int]:
        return self._control("GET", "truth")

    def records(self, listing: str) -> list[dict[str, Any]]:
        return self._control("GET", f"records/{listing}")

    def mutate(
        self, listing: str, *, insert: int = 0, update: int = 0, delete: int = 0
    ) -> dict[str, list[int]]:
        payload = {"listing": listing, "insert": insert, "update": update, "delete": delete}
        return self._control("POST", "mutate", payload)

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "stats")
