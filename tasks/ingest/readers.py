"""Per-format readers: bytes of one object -> bounded chunks of decoded records.

Every reader yields ``Chunk`` lists of ``(row_number, record, raw)`` where ``record`` is the
decoded value (validated later, once, by ``models.events.validate_record``) or a ``Rejection``
when the row cannot even be decoded, and ``raw`` is the row's original text when the format has
one (kept only so a rejected row can be stored as it came). Problems with the object as a whole
(not UTF-8, truncated gzip, not Parquet, missing columns) raise ``ObjectUnreadable``: the object
is marked failed and nothing of it is kept.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any

import orjson

from tallyflow.models.events import MAX_RECORD_BYTES, Reason, Rejection
from tallyflow.models.exact_json import loads_exact
from tallyflow.models.number_rule import MAX_FRACTION_DIGITS, out_of_range_message
from tallyflow.models.rating.money import WIDE, float_to_decimal

Row = tuple[int, Any, bytes | str | None]
Chunk = list[Row]
Reader = Callable[[IO[bytes], int], Iterator[Chunk]]

FORMATS = ("jsonl", "json", "csv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
REQUIRED_COLUMNS = ("transaction_id", "external_subscription_id", "code")


class ObjectUnreadable(Exception):
    """The object as a whole cannot be read; retried on the next run."""


def detect(path: str) -> tuple[str | None, str | None]:
    """(format, compression) from an object's name; None where the name does not say."""
    name = path.lower()
    compression = None
    for suffix, kind in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression = kind
            name = name[: -len(suffix)]
            break
    for suffix, fmt in _EXTENSIONS.items():
        if name.endswith(suffix):
            return fmt, compression
    return None, compression


def _decode_error(line: bytes, row: int) -> Rejection | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ObjectUnreadable(f"line {row} is not UTF-8 (byte {exc.start})") from exc
    return None


class CheckedZstdReader(io.RawIOBase):
    """Decompress zstd and fail loudly when the data ends inside a frame.

    zstandard's stream reader reports a clean end of data for a truncated object, which would
    load it as a shorter batch and lose the rest without an error. Here the decompressor's own
    end-of-frame flag decides.
    """

    def __init__(self, raw: IO[bytes], read_size: int = 1 << 17) -> None:
        import zstandard

        self._raw = raw
        self._read_size = read_size
        self._factory = zstandard.ZstdDecompressor()
        self._frame = self._factory.decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            compressed = self._raw.read(self._read_size)
            if not compressed:
                if self._in_frame and not self._frame.eof:
                    raise ObjectUnreadable("truncated zstd data: the last frame never ends")
                return 0
            self._pending = self._feed(compressed)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame.eof:  # concatenated frames: the rest starts the next one
                self._frame = self._factory.decompressobj()
            self._in_frame = True
            out.append(self._frame.decompress(data))
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)


def _buffered(stream: IO[bytes]) -> IO[bytes]:
    """Line access for every stream: some decompressors (zstd) only offer read/readinto."""
    if isinstance(stream, io.BufferedIOBase):
        return stream
    # typeshed wants a RawIOBase; read/readinto is all BufferedReader calls.
    return io.BufferedReader(stream, buffer_size=1 << 20)  # type: ignore[type-var]


_BOM = b"\xef\xbb\xbf"


def jsonl_lines(stream: IO[bytes], chunk_size: int) -> Iterator[list[tuple[int, bytes]]]:
    """The lines of a JSON Lines object as ``(row_number, line)``, ``chunk_size`` at a time.

    Blank lines are skipped but keep their row number (the next row's number is its line's);
    a line over ``MAX_RECORD_BYTES`` is kept, to be refused by ``decode_line``.

    Lines are read about a megabyte at a time (``readlines``) and numbered with no Python
    step per line unless that batch has a blank line: a loop per line cost as much as
    pyarrow's check of the whole chunk (``tasks/ingest/columnar.py``).
    """
    chunk: list[tuple[int, bytes]] = []
    row = 0
    for batch in _line_batches(_buffered(stream)):
        if any(map(bytes.isspace, batch)):
            rows = [(row + index, line) for index, line in enumerate(batch, 1)
                    # as ``not line.strip()``
                    if not (len(line) <= MAX_RECORD_BYTES and line.isspace())]
        else:
            rows = list(zip(range(row + 1, row + 1 + len(batch)), batch, strict=False))
        row += len(batch)
        start = 0
        while start < len(rows):
            taken = max(chunk_size - len(chunk), 1)
            chunk += rows[start : start + taken]
            start += taken
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


_BATCH_BYTES = 1 << 20


def _line_batches(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """The stream's lines in lists of about ``_BATCH_BYTES``, minus a UTF-8 byte order mark at
    its very start.

    Editors and Excel write one; RFC 8259 lets a parser ignore it, and refusing it would turn
    the first row of an otherwise good object into an ``invalid_json`` rejection.
    """
    first = True
    while batch := stream.readlines(_BATCH_BYTES):
        if first and batch[0].startswith(_BOM):
            batch[0] = batch[0][len(_BOM) :]
        first = False
        yield batch


def decode_line(line: bytes, row: int) -> Any:
    """One JSON Lines row: its decoded value, or the ``Rejection`` saying why it has none."""
    if len(line) > MAX_RECORD_BYTES:
        _decode_error(line, row)
        return Rejection(
            Reason.RECORD_TOO_LARGE,
            None,
            f"line is {len(line)} bytes; the limit is {MAX_RECORD_BYTES}",
        )
    stripped = line.strip()
    try:
        return loads_exact(stripped)
    except (orjson.JSONDecodeError, ValueError) as exc:
        _decode_error(stripped, row)
        return Rejection(Reason.INVALID_JSON, None, f"not valid JSON: {exc}")


def read_jsonl(stream: IO[bytes], chunk_size: int) -> Iterator[Chunk]:
    """JSON Lines, keeping each line's text so a rejected row is stored exactly as it came."""
    for lines in jsonl_lines(stream, chunk_size):
        yield [(row, decode_line(line, row), line) for row, line in lines]


def read_json(stream: IO[bytes], chunk_size: int) -> Iterator[Chunk]:
    """A JSON array of events or Lago's batch body ``{"events": [...]}`` -- or, when the
    object is one JSON record per line, those records (as ``read_jsonl``).

    A JSON document has to be parsed whole, so this format is for API-sized batches; large
    objects belong in JSON Lines, CSV or Parquet, which stream.
    """
    data = stream.read()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        document = loads_exact(data)
    except (orjson.JSONDecodeError, ValueError) as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as decode_exc:
            raise ObjectUnreadable(f"not UTF-8 (byte {decode_exc.start})") from decode_exc
        if _one_document_per_line(data):
            # Bedrock's invocation logs (and CloudWatch exports) are ``.json(.gz)`` objects
            # with one JSON record per line: read as JSON Lines, a bad line rejected alone
            yield from read_jsonl(io.BytesIO(data), chunk_size)
            return
        raise ObjectUnreadable(f"not valid JSON: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("events"), list):
        records = document["events"]
    elif isinstance(document, dict) and isinstance(document.get("event"), dict):
        records = [document["event"]]
    elif isinstance(document, list):
        records = document
    else:
        raise ObjectUnreadable(
            'a .json object must be an array of events or {"events": [...]} (Lago batch body)'
        )
    for start in range(0, len(records), chunk_size):
        yield [
            (start + i + 1, record, None)
            for i, record in enumerate(records[start : start + chunk_size])
        ]


def _one_document_per_line(data: bytes) -> bool:
    """The first two non-empty lines are each a whole JSON object: JSON Lines named .json."""
    lines = [line for line in data.split(b"\n", 3)[:3] if line.strip()][:2]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(orjson.loads(line), dict) for line in lines)
    except orjson.JSONDecodeError:
        return False


def _nest_properties(flat: dict[str, Any]) -> dict[str, object]:
    """Fold ``properties.<key>`` columns (or a JSON ``properties`` column) into one object."""
    record: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("properties."):
            if value is not None and value != "":
                properties[key[len("properties.") :]] = value
        elif value is not None and value != "":
            record[key] = value
    raw_properties = record.pop("properties", None)
    if isinstance(raw_properties, str):
        try:
            raw_properties = loads_exact(raw_properties)
        except (orjson.JSONDecodeError, ValueError):
            return {
                **record,
                "properties": Rejection(
                    Reason.INVALID_JSON, "properties", "the properties column is not valid JSON"
                ),
            }
    if isinstance(raw_properties, list) and all(
        isinstance(item, tuple) and len(item) == 2 for item in raw_properties
    ):  # Parquet map columns arrive as lists of (key, value) pairs
        raw_properties = dict(raw_properties)
    if raw_properties is not None:
        if not isinstance(raw_properties, dict):
            record["properties"] = raw_properties
            return record
        properties = {**raw_properties, **properties}
    record["properties"] = properties
    return record


def _check_columns(columns: list[str], what: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ObjectUnreadable(f"{what} has no column {', '.join(missing)} (has {columns})")


def read_csv(stream: IO[bytes], chunk_size: int) -> Iterator[Chunk]:
    """CSV with a header; properties as ``properties.<key>`` columns or a JSON column.

    Python's csv module rather than pyarrow: it reports the exact row of a ragged line, which
    pyarrow's multithreaded reader cannot, and keeps every value as text as Lago compares it.
    """
    # utf-8-sig: a leading byte order mark (Excel's "CSV UTF-8") is dropped, not glued to the
    # first column's name. strict: a quote left open at the end of the object (a truncated or
    # mangled file) fails the object instead of swallowing every following line into one field.
    text = io.TextIOWrapper(_buffered(stream), encoding="utf-8-sig", errors="strict", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        _check_columns(header, "the CSV header")
        chunk: Chunk = []
        for row_number, values in enumerate(reader, start=1):
            if not values:
                continue
            raw = _csv_line(values)
            if len(values) != len(header):
                record: Any = Rejection(
                    Reason.COLUMN_COUNT,
                    None,
                    f"row has {len(values)} columns; the header has {len(header)}",
                )
            else:
                record = _nest_properties(dict(zip(header, values, strict=True)))
                if isinstance(record.get("properties"), Rejection):
                    record = record["properties"]
            chunk.append((row_number, record, raw))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    except UnicodeDecodeError as exc:
        raise ObjectUnreadable(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except csv.Error as exc:
        raise ObjectUnreadable(f"unreadable CSV at line {reader.line_num}: {exc}") from exc
    finally:
        text.detach()


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().rstrip("\r\n")


class _NotFinite(ValueError):
    def __init__(self, path: str, value: float) -> None:
        if math.isnan(value):
            super().__init__(f"{path} is {value!r}, not a number")
            self.reason = Reason.INVALID_NUMBER
        else:  # an infinity is a number, beyond every bound (docs/architecture.md §7)
            super().__init__(out_of_range_message(path, value))
            self.reason = Reason.NUMBER_OUT_OF_RANGE
        self.path = path


def _exact_floats(value: Any, path: str) -> Any:
    """Floating-point column values as exact decimals by the documented rule: the shortest
    text that reads back as the same double (``repr``), so 0.1 stays 0.1 and no binary float
    reaches a property, an amount or a timestamp. NaN and infinities raise ``_NotFinite``
    (a NaN is not a quantity; turning it into 0 or null would bill something else)."""
    kind = type(value)
    if kind is float:
        try:
            return float_to_decimal(value)
        except ValueError:
            raise _NotFinite(path, value) from None
    if kind is dict:
        return {k: _exact_floats(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if kind is list:
        return [_exact_floats(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is tuple:
        return tuple(_exact_floats(v, path) for v in value)
    if kind is Decimal:
        return _column_scale_dropped(value)
    return value


def _column_scale_dropped(value: Decimal) -> Decimal:
    """A decimal column's scale is its type, not digits anyone wrote: 1.5 in a decimal(38, 30)
    column is 1.5 (trailing zeros dropped), not a number with 30 digits after the point."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= -MAX_FRACTION_DIGITS:
        return value
    stripped = value.normalize(WIDE)
    exponent = stripped.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return stripped.quantize(Decimal(1), context=WIDE)
    return stripped


def _parquet_record(flat: dict[str, Any]) -> Any:
    try:
        exact = _exact_floats(flat, "")
    except _NotFinite as exc:
        field = exc.path.split(".")[0].split("[")[0]
        field = "properties" if field.startswith("properties") else field
        return Rejection(exc.reason, exc.path if exc.reason is Reason.NUMBER_OUT_OF_RANGE
                         else field, str(exc))
    record = _nest_properties(exact)
    if isinstance(record.get("properties"), Rejection):
        return record["properties"]
    return record


def read_parquet(stream: IO[bytes], chunk_size: int) -> Iterator[Chunk]:
    """Parquet (and so Arrow) batches; floating-point columns become exact decimals through
    their shortest round-trip text (see ``_exact_floats``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
        columns = parquet.schema_arrow.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise ObjectUnreadable(f"not a Parquet file: {exc}") from exc
    _check_columns(columns, "the Parquet schema")
    row_number = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_size):
            chunk: Chunk = []
            for flat in batch.to_pylist():
                row_number += 1
                chunk.append((row_number, _parquet_record(flat), None))
            yield chunk
    except (pa.ArrowInvalid, OSError) as exc:
        raise ObjectUnreadable(f"Parquet read failed after row {row_number}: {exc}") from exc


READERS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "json": read_json,
    "csv": read_csv,
    "parquet": read_parquet,
}
