"""Serialise a prepared statement's values without the driver's per-row `bind()`.

`BatchStatement.add(prepared, row)` builds a BoundStatement per row: ~10 µs for the 18 columns of
a tracking event, about half of it outside the value serialisers themselves. `RowEncoder` keeps
one serialiser per column, picked once from the prepared statement's column types, and produces
the same bytes as the driver (tests/unit/test_cql_values.py compares them type by type): common
types get a direct path (~2.5 µs a row), anything else goes through the driver's own
`cqltype.serialize`. None stays a null, UNSET_VALUE stays unset (protocol v4+).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.marshal import double_pack, int32_pack, int64_pack
from cassandra.query import UNSET_VALUE, BatchStatement, PreparedStatement

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _generic(cqltype: Any, protocol_version: int) -> Callable[[Any], bytes]:
    serialize = cqltype.serialize

    def enc(v: Any) -> bytes:
        return serialize(v, protocol_version)  # type: ignore[no-any-return]

    return enc


def _text(cqltype: Any, protocol_version: int) -> Callable[[Any], bytes]:
    slow = _generic(cqltype, protocol_version)

    def enc(v: Any) -> bytes:
        return v.encode("utf-8") if type(v) is str else slow(v)

    return enc


def _uuid(cqltype: Any, protocol_version: int) -> Callable[[Any], bytes]:
    slow = _generic(cqltype, protocol_version)

    def enc(v: Any) -> bytes:
        try:
            return v.bytes  # type: ignore[no-any-return]
        except AttributeError:
            return slow(v)  # the driver's TypeError for a non-UUID

    return enc


def _timestamp(cqltype: Any, protocol_version: int) -> Callable[[Any], bytes]:
    slow = _generic(cqltype, protocol_version)

    def enc(v: Any) -> bytes:
        # Zoned datetimes after 1970 (every time the pipeline writes): whole milliseconds since the
        # epoch in integer arithmetic, which is what the driver's float formula truncates to there.
        if type(v) is datetime and v.tzinfo is not None and v.utcoffset() is not None and v >= _EPOCH:
            return int64_pack((v - _EPOCH) // _MS)
        return slow(v)

    return enc


def _packer(pack: Callable[[Any], bytes], exact: type) -> Callable[[Any, int], Callable[[Any], bytes]]:
    def make(cqltype: Any, protocol_version: int) -> Callable[[Any], bytes]:
        slow = _generic(cqltype, protocol_version)

        def enc(v: Any) -> bytes:
            return pack(v) if type(v) is exact else slow(v)

        return enc

    return make


# The column types of tracking_events, each compared with the driver in tests/unit/test_cql_values.py.
# Any other type goes through the driver's own serialiser (e.g. ascii, which refuses non-ASCII text).
_FAST: dict[str, Callable[[Any, int], Callable[[Any], bytes]]] = {
    "VarcharType": _text,
    "UUIDType": _uuid,
    "DateType": _timestamp,
    "DoubleType": _packer(double_pack, float),
    "Int32Type": _packer(int32_pack, int),
    "LongType": _packer(int64_pack, int),
}


class RowEncoder:
    """Rows in the prepared statement's column order → the values a BatchStatement sends."""

    def __init__(self, cqltypes: Sequence[Any], protocol_version: int) -> None:
        if protocol_version < 4:
            raise ValueError("RowEncoder keeps UNSET_VALUE, which needs protocol v4 or later")
        self._fns = [_FAST.get(t.__name__, _generic)(t, protocol_version) for t in cqltypes]

    @classmethod
    def for_statement(cls, prepared: PreparedStatement, protocol_version: int) -> RowEncoder:
        return cls([c.type for c in prepared.column_metadata], protocol_version)

    def __call__(self, row: Sequence[Any]) -> list[Any]:
        if len(row) != len(self._fns):
            raise ValueError(f"{len(row)} values for {len(self._fns)} columns")
        u = UNSET_VALUE
        return [v if v is None or v is u else f(v) for f, v in zip(self._fns, row, strict=True)]


def add_rows(batch: BatchStatement, prepared: PreparedStatement, encode: RowEncoder,
             rows: Sequence[Sequence[Any]]) -> None:
    """Add `rows` of one prepared statement to `batch`. The first goes through the driver's `add`
    (it sets the batch's routing key and keyspace, for token-aware routing); the rest are appended
    already serialised, as `add` would after its bind."""
    if not rows:
        return
    batch.add(prepared, rows[0])
    append = batch._add_statement_and_params  # noqa: SLF001 - add()'s own path after bind()
    query_id = prepared.query_id
    for row in rows[1:]:
        append(True, query_id, encode(row))
