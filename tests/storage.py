"""A bucket to drop batch objects into, the same way on every storage kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint that checks credentials, and the one user it knows."""

    endpoint: str
    key: str
    secret: str


class Bucket:
    """A place to drop batch objects, the same way for every storage kind."""

    def __init__(self, url: str, options: dict | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.options = options or {}
        storage = {}
        if self.options.get("endpoint_url"):
            storage = {"client_kwargs": {"endpoint_url": self.options["endpoint_url"]},
                       "use_listings_cache": False}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage)

    def put(self, name: str, data: bytes | str) -> str:
        payload = data.encode() if isinstance(data, str) else data
        path = f"{self.root}/{name}"
        parent = path.rsplit("/", 1)[0]
        if self.url.startswith("file://"):
            self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(path, "wb") as handle:
            handle.write(payload)
        return self.fs.unstrip_protocol(path)

    def spec(self, **kwargs: object):  # -> SourceSpec
        from tallyflow.tasks.ingest import SourceSpec

        return SourceSpec(url=self.url, options=dict(self.options), **kwargs)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
