"""A lean HTTP/1.1 client for the API benchmarks, and the CPU each side spent.

httpx costs the benchmark more CPU per request than the server's route does (measured: on
this 2-core machine 300 httpx tasks used most of a core to offer ~2,000 requests/s), so a
benchmark driving the API with it mostly measured its own clients. ``Connection`` keeps one
keep-alive connection per client, writes a request prebuilt as bytes and reads the answer by
its Content-Length: a few microseconds of Python per request. ``cpu_seconds`` reads what a
process group used (``/proc``), so each report separates the server's CPU from the clients'.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass


class HttpError(Exception):
    """The connection closed or answered something this client does not read."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive connection to ``host:port``; reconnects after a failure."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(
            f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items()
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0
    ) -> Answer:
        """One request; a timeout or a dropped connection closes it and raises."""
        try:
            return await asyncio.wait_for(self._exchange(method, path, body), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError):
            self.close()
            raise

    async def _exchange(self, method: str, path: str, body: bytes | None) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        extra = (
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            if body is not None
            else b""
        )
        self._writer.write(
            b"%s %s HTTP/1.1\r\n%s%s\r\n%s"
            % (method.encode(), path.encode(), self.head, extra, body or b"")
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise HttpError(f"no Content-Length in a {status} answer")
        data = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


class CpuMeter:
    """The CPU the server's process group and this (client) process spend between ``start``
    and ``stop``, and the machine's load average when it started."""

    def __init__(self, *server_pgids: int) -> None:
        self.pgids = server_pgids
        self.load_at_start = os.getloadavg()[0]
        self.server = self.client = self.wall = 0.0

    def start(self) -> None:
        self.load_at_start = os.getloadavg()[0]
        self._server0 = sum(cpu_seconds(g) for g in self.pgids)
        self._client0 = time.process_time()
        self._wall0 = time.perf_counter()

    def stop(self) -> None:
        self.server = sum(cpu_seconds(g) for g in self.pgids) - self._server0
        self.client = time.process_time() - self._client0
        self.wall = time.perf_counter() - self._wall0

    def line(self) -> str:
        return (
            f"  CPU during the load: server {self.server:.1f} s "
            f"({self.server / self.wall:.2f} cores), benchmark clients {self.client:.1f} s "
            f"({self.client / self.wall:.2f} cores) of {os.cpu_count()} cores; load average "
            f"at start {self.load_at_start:.1f}"
        )
