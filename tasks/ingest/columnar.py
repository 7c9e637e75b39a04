"""JSON Lines of plain Lago events, staged by column (pyarrow) instead of row by row.

Formatting each row for COPY in Python cost more than PostgreSQL's merge of it, and took the
CPU the merge needed on a small machine (docs/scaling.md section 1). Here a chunk of lines is
parsed by pyarrow's JSON reader, checked column by column, and written as COPY text by
pyarrow's string kernels: no Python object per row, and the GIL is released throughout.

The row path (``tasks/ingest/staging.py: stage_rows``) stays the single definition of what is
valid: this path only takes the rows it can prove the row path would accept, with the same
values, and hands every other row -- with its row number and original line -- to the row path.
A whole chunk goes to the row path when anything about it is unusual (another mapping, a float,
a nested property, a field pyarrow's reader and orjson might read differently). So rejects
(file, row, field, reason, message) are exactly those of the row path, whichever path ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from operator import itemgetter
from typing import IO, Any

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.events import (
    MAX_ID_LENGTH,
    MAX_PROPERTIES_BYTES,
    MAX_RECORD_BYTES,
    TimeBounds,
)
from tallyflow.models.mappings import LAGO
from tallyflow.tasks.ingest.readers import decode_line, jsonl_lines
from tallyflow.tasks.ingest.sources import Source
from tallyflow.tasks.ingest.staging import RejectedRow, Staged, stage_rows

_TEXT = ("transaction_id", "external_subscription_id", "code")
_KNOWN = frozenset((*_TEXT, "timestamp", "properties", "precise_total_amount_cents"))
# Characters the column path leaves to the row path: COPY text escapes (tab, newline, carriage
# return, backslash), NUL, and -- inside a property value or name, written into JSON text
# here -- the quote and the other control characters JSON escapes. As byte values: all ASCII.
_ESCAPED = (0x00, 0x1F, ord("\\"))  # a byte range and one more byte (_has_byte)
_JSON_ESCAPED = (*_ESCAPED, ord('"'))


def applies(source: Source, reader: Any) -> bool:
    """Lago records read by the JSON Lines reader, with no mapping in between."""
    from tallyflow.tasks.ingest.readers import read_jsonl
    from tallyflow.tasks.ingest.sources import Source as Base

    return (reader is read_jsonl and source.mapping is LAGO
            and type(source).map_record is Base.map_record)


# Below this many rows a chunk goes row by row: a little Python, where importing pyarrow would
# cost a small ingest far more (docs/scaling.md §6; issue 11's start-up budget).
COLUMN_MIN_ROWS = 2_000


def staged_jsonl(
    stream: IO[bytes], chunk_rows: int, source: Source, bounds: TimeBounds,
    column_min_rows: int = COLUMN_MIN_ROWS,
) -> Iterator[tuple[Staged, list[RejectedRow]]]:
    """What ``validated(read_jsonl(...))`` yields for the same object, chunk for chunk: the
    staged rows (in another order within a chunk; the merge orders them) and the rejects."""
    for lines in jsonl_lines(stream, chunk_rows):
        failpoint("ingest.after_read_chunk")
        fast = _columns(lines, bounds) if len(lines) >= column_min_rows else None
        data, count, rest = fast if fast is not None else (b"", 0, lines)
        slow, rejected, empty = stage_rows(
            [(row, decode_line(line, row), line) for row, line in rest], source, bounds)
        # a line is one record; each line taken by column is one event
        yield (Staged(count + len(slow), data + "".join(slow).encode(), len(lines), empty),
               rejected)


def _columns(
    lines: list[tuple[int, bytes]], bounds: TimeBounds
) -> tuple[bytes, int, list[tuple[int, bytes]]] | None:
    """(COPY text of the rows taken, their count, the rows left to the row path), or None
    when the chunk goes to the row path whole -- also on any error of pyarrow's: an input it
    trips on must still load (or be rejected) as the row path says, never fail the object."""
    import pyarrow as pa

    try:
        table = _read(lines)
        return None if table is None else _take(table, lines, bounds)
    except (pa.ArrowException, UnicodeDecodeError):
        return None


def _take(
    table: Any, lines: list[tuple[int, bytes]], bounds: TimeBounds
) -> tuple[bytes, int, list[tuple[int, bytes]]] | None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    properties = table.column("properties").combine_chunks()
    if any(not _plain_name(field.name) for field in properties.type) or any(
        not (pa.types.is_int64(field.type) or pa.types.is_string(field.type)
             or pa.types.is_boolean(field.type)) for field in properties.type
    ):
        return None
    ok = properties.is_valid()
    for name in _TEXT:
        column = table.column(name).combine_chunks()
        length = pc.utf8_length(column)
        ok = pc.and_(ok, pc.and_(pc.greater(length, 0), pc.less_equal(length, MAX_ID_LENGTH)))
        # something besides whitespace (what str.strip removes is never in [!-~]), and
        # nothing to escape
        ok = pc.and_(ok, pa.array(_has_visible(column) & ~_has_byte(column, *_ESCAPED)))
    stamp = table.column("timestamp").combine_chunks()
    ok = pc.and_(ok, pc.and_(pc.greater_equal(stamp, bounds.lowest_epoch),
                             pc.less_equal(stamp, bounds.latest_epoch)))
    if "precise_total_amount_cents" in table.column_names:  # any amount: row path
        ok = pc.and_(ok, pc.is_null(table.column("precise_total_amount_cents").combine_chunks()))
    # The properties as JSON text, in pieces (constants and arrays) written straight into
    # each row's COPY line below: one join for the line, not one more for the properties.
    # Keys in jsonb's own order (shorter first, then bytewise): PostgreSQL then finds them
    # sorted when it parses the text in COPY (less server time, docs/scaling.md §6); the stored
    # jsonb is the same whatever the order of the text.
    keys = sorted(enumerate(field.name for field in properties.type),
                  key=lambda item: (len(item[1].encode()), item[1].encode()))
    pieces: list[Any] = []
    for place, (index, key) in enumerate(keys):
        value = properties.field(index)
        ok = pc.and_(ok, value.is_valid())  # a missing key and a null read alike: row path
        head = ("{" if place == 0 else ",") + f'"{key}":'
        if pa.types.is_string(value.type):
            ok = pc.and_(ok, pa.array(~_has_byte(value, *_JSON_ESCAPED)))
            pieces += [head + '"', value, '"']
        else:
            pieces += [head, pc.cast(value, pa.string())]
    pieces.append("}" if keys else "{}")
    size: Any = sum(len(piece.encode()) for piece in pieces if isinstance(piece, str))
    for piece in pieces:
        if not isinstance(piece, str):
            size = pc.add(size, pc.binary_length(piece))
    ok = pc.fill_null(pc.and_(ok, pc.less_equal(size, MAX_PROPERTIES_BYTES)), False)
    first = lines[0][0]
    rows = pa.array(np.arange(first, first + len(lines), dtype=np.int64))
    # UTC seconds as text; the zone written as "Z" here: the cast through a zoned type costs
    # ten times as much (a zone lookup per value)
    when = pc.cast(pc.cast(stamp, pa.timestamp("s")), pa.string())
    taken = _joined(
        pc.cast(rows, pa.string()), "\t0\t", table.column("transaction_id").combine_chunks(),
        "\t", table.column("external_subscription_id").combine_chunks(), "\t",
        table.column("code").combine_chunks(), "\t", when, "Z\t", *pieces, "\t\\N\tt\n",
    )
    rest = [lines[i] for i in np.flatnonzero(~ok.to_numpy(zero_copy_only=False))]
    if rest:
        taken = taken.filter(ok)
    return _values(taken), len(taken), rest


def _joined(*parts: Any) -> Any:
    """Row by row, the parts (string arrays, and constants) joined; adjacent constants are
    joined first, as each part costs its own step per row."""
    import pyarrow.compute as pc

    merged: list[Any] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return pc.binary_join_element_wise(*merged, "")


def _read(lines: list[tuple[int, bytes]]) -> Any:
    """The chunk as a pyarrow table with the expected columns, one row per line; or None.

    One row per line needs care: pyarrow's reader would read two values on one line as two
    rows, and one spread over lines as one. Every line starting with ``{`` and ending with
    ``}`` rules the second out (a value continued on the next line would put ``{`` right after
    ``}`` inside it, which is not JSON); the count rules out the first. Lines not so shaped,
    too long, not UTF-8, or numbered with gaps (a blank line between) leave the chunk to the
    row path, as does any value pyarrow reads and orjson might not (extra fields are refused,
    the known ones have fixed types).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.json as pj

    first, last = lines[0][0], lines[-1][0]
    if last - first + 1 != len(lines):
        return None
    sizes = np.fromiter(map(len, map(itemgetter(1), lines)), dtype=np.int64, count=len(lines))
    if sizes.max() > MAX_RECORD_BYTES:
        return None
    block = b"".join(map(itemgetter(1), lines))
    if not block.endswith(b"\n"):
        block += b"\n"
        sizes[-1] += 1
    # A line holds no newline but its last byte, so each line is shaped as said above when
    # its first byte is "{" and the one before its newline "}" (or "}\r"): tested at the line
    # bounds, not by searching the block (three searches cost half of pyarrow's parse of it).
    # The first line's "{" also guards pyarrow's reader, which crashes on a chunk starting
    # with ``null``.
    ends = np.cumsum(sizes)
    if sizes.min() < 3:  # shorter than "{}\n"
        return None
    at = np.frombuffer(block, dtype=np.uint8)
    closing = at[ends - 2]
    if not (np.all(at[ends - sizes] == ord("{")) and np.all(
        (closing == ord("}")) | ((closing == ord("\r")) & (at[ends - 3] == ord("}")))
    )):
        return None
    # not UTF-8: the row path fails the object, saying where (validated without a copy)
    pa.Array.from_buffers(pa.large_string(), 1, [
        None, pa.py_buffer(np.array([0, len(block)], dtype=np.int64)), pa.py_buffer(block),
    ]).validate(full=True)
    table = pj.read_json(
        pa.py_buffer(block),
        read_options=pj.ReadOptions(use_threads=False, block_size=len(block) + 1),
        parse_options=pj.ParseOptions(explicit_schema=_schema(), newlines_in_values=False,
                                      unexpected_field_behavior="infer"),
    )
    if table.num_rows != len(lines) or not set(table.column_names) <= _KNOWN:
        return None
    if "properties" not in table.column_names or not pa.types.is_struct(
        table.schema.field("properties").type
    ):
        return None
    return table


@cache
def _schema() -> Any:
    """The known fields' types (built on first use: pyarrow is imported only when needed,
    which keeps it out of the command's start-up)."""
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in _TEXT] + [("timestamp", pa.int64())])


def _plain_name(key: str) -> bool:
    return bool(key) and not any(c in key for c in '"\\') and key.isprintable()


def _values(strings: Any) -> bytes:
    """The concatenated values of a string array: its data buffer between the first and the
    last offset, copied once."""
    import numpy as np

    if not len(strings):
        return b""
    _, offsets, data = strings.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(strings) + 1,
                           offset=strings.offset * 4)
    return data.slice(int(bounds[0]), int(bounds[-1] - bounds[0])).to_pybytes()


def _bytes(strings: Any) -> tuple[Any, Any]:
    """A string array's value bounds (from 0) and the bytes they index, as numpy arrays."""
    import numpy as np

    _, offsets, data = strings.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(strings) + 1,
                           offset=strings.offset * 4)
    if data is None:
        return bounds - bounds[0], np.zeros(0, dtype=np.uint8)
    return bounds - bounds[0], np.frombuffer(data, dtype=np.uint8)[bounds[0]:bounds[-1]]


def _has_byte(strings: Any, low: int, high: int, *others: int) -> Any:
    """Per value of a string array (numpy bools): whether a byte of it is in [low, high] or
    one of ``others``.

    The bytes tested are ASCII, and in UTF-8 an ASCII byte is only ever that character, so
    this is the same test per character -- vector passes over the array's data for the lot
    (a regex per value cost half of ``_take``); the usual array, with no such byte at all,
    costs one pass.
    """
    import numpy as np

    bounds, view = _bytes(strings)
    marked = (view - np.uint8(low)) <= np.uint8(high - low)
    for other in others:
        marked |= view == other
    if not marked.any():
        return np.zeros(len(strings), dtype=bool)
    seen = np.concatenate(([0], np.cumsum(marked)))
    return seen[bounds[1:]] > seen[bounds[:-1]]


def _has_visible(strings: Any) -> Any:
    """Per value: whether a character of it is in [!-~] -- usually its first byte already."""
    import numpy as np

    bounds, view = _bytes(strings)
    if not len(view):
        return np.zeros(len(strings), dtype=bool)
    filled = bounds[1:] > bounds[:-1]
    first = view[np.minimum(bounds[:-1], len(view) - 1)]
    quick = filled & ((first - np.uint8(ord("!"))) <= np.uint8(ord("~") - ord("!")))
    if np.array_equal(quick, filled):
        return quick
    return _has_byte(strings, ord("!"), ord("~"))
