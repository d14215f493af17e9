"""Records to columns: the one home of the wire format, type resolution and widening.

Every rule about how an Invoiced value becomes a warehouse value lives here, once:
- **the wire format** (`WIRE_ARROW_TYPES`, `wire_array`): how a column's values travel from the
  API to a destination, in memory or in batch files, before the destination casts them exactly;
- **type resolution** (`column_type`): the type a column gets from the catalogue's declared
  type and the values seen in one load;
- **widening** (`widest`): the narrowest type that holds the values of two types. The same rule
  decides a column's type within one load (values of several kinds) and across loads (the
  published column against the incoming one, `drift.plan_columns`), whatever the order;
- **re-spelling** (`rewire`): a batch written with a narrower type, spelled as the whole
  listing spells the wider type's values.

The destinations spell the same widenings in SQL (`Dialect.convert`): which widenings exist,
and to what, is decided here.

| logical type | wire value                             | DuckDB          | Snowflake      |
|--------------|----------------------------------------|-----------------|----------------|
| integer      | int64                                  | BIGINT          | NUMBER(38,0)   |
| boolean      | bool                                   | BOOLEAN         | BOOLEAN        |
| timestamp    | int64 UNIX seconds                     | TIMESTAMP (UTC) | TIMESTAMP_NTZ  |
| decimal      | the number's exact decimal text        | DECIMAL(38,10)  | NUMBER(38,10)  |
| string       | str                                    | VARCHAR         | VARCHAR        |
| json         | JSON text                              | JSON            | VARIANT        |

Money is never a binary float in the warehouse: JSON numbers are parsed by Python as int or
float, and `repr(float)` is the shortest text that reads back as the same float, which for any
amount of up to 15 significant digits is exactly the text the API sent.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

from invoiced_assets.catalogue import FieldType

WIRE_ARROW_TYPES: Mapping[FieldType, pa.DataType] = {
    FieldType.INTEGER: pa.int64(),
    FieldType.TIMESTAMP: pa.int64(),  # UNIX seconds
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.DECIMAL: pa.string(),  # exact decimal text
    FieldType.STRING: pa.string(),
    FieldType.JSON: pa.string(),  # JSON text
}


def wire_schema(columns: Sequence[tuple[str, FieldType]]) -> pa.Schema:
    return pa.schema([(name, WIRE_ARROW_TYPES[field_type]) for name, field_type in columns])


class JsonText(str):
    """A nested value already serialized to JSON text (so it is never serialized twice)."""

    __slots__ = ()


def encode_json(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (orjson: about 6x faster than json, measured)."""
    return orjson.dumps(value).decode()


NESTED_TYPES = (dict, list)
_EMPTY_JSON = {dict: JsonText("{}"), list: JsonText("[]")}


def to_json_text(value: Any) -> JsonText:
    if not value and type(value) in _EMPTY_JSON:
        return _EMPTY_JSON[type(value)]  # most nested values (metadata, discounts) are empty
    return JsonText(encode_json(value))


# --------------------------------------------------------------------------------------------
# Types: one widening rule, for values within a load and for columns across loads
# --------------------------------------------------------------------------------------------


# Each type, and the types that hold every one of its values exactly, narrowest first: integer →
# decimal → JSON → text; booleans are JSON values too; a timestamp only fits in text beside
# anything else (a fractional epoch is kept as text rather than guessed at). Text stays text: a
# column that once had to hold text keeps holding it, so queries written against it keep working.
_HELD_BY: Mapping[FieldType, tuple[FieldType, ...]] = {
    FieldType.INTEGER: (FieldType.INTEGER, FieldType.DECIMAL, FieldType.JSON, FieldType.STRING),
    FieldType.DECIMAL: (FieldType.DECIMAL, FieldType.JSON, FieldType.STRING),
    FieldType.BOOLEAN: (FieldType.BOOLEAN, FieldType.JSON, FieldType.STRING),
    FieldType.JSON: (FieldType.JSON, FieldType.STRING),
    FieldType.TIMESTAMP: (FieldType.TIMESTAMP, FieldType.STRING),
    FieldType.STRING: (FieldType.STRING,),
}


def widest(a: FieldType, b: FieldType) -> FieldType:
    """The narrowest type that holds every value of both types.

    The types form a lattice (`_HELD_BY`), so the result does not depend on the order in which
    values or loads arrive: a column typed from two loads at once has the type it gets from one
    load and then the other.
    """
    return next(t for t in _HELD_BY[a] if t in _HELD_BY[b])


# The type of each kind of Python value a parsed JSON body holds (nested values as JsonText).
_TYPE_OF_VALUE: Mapping[type, FieldType] = {
    bool: FieldType.BOOLEAN,
    int: FieldType.INTEGER,
    float: FieldType.DECIMAL,
    str: FieldType.STRING,
    JsonText: FieldType.JSON,
}


def value_type(python_type: type, declared: FieldType | None) -> FieldType:
    """The type one kind of value needs. An integer in a timestamp field is UNIX seconds."""
    found = _TYPE_OF_VALUE.get(python_type, FieldType.STRING)
    if found is FieldType.INTEGER and declared is FieldType.TIMESTAMP:
        return FieldType.TIMESTAMP
    return found


def column_type(declared: FieldType | None, value_types: Iterable[type]) -> FieldType:
    """A column's type in one load: the catalogue's type (if any) widened by every value seen.

    A column with no value keeps its declared type (text when unknown).
    """
    result = declared
    for python_type in value_types:
        if python_type is not type(None):
            found = value_type(python_type, declared)
            result = found if result is None else widest(result, found)
    return result or FieldType.STRING


# --------------------------------------------------------------------------------------------
# The wire format
# --------------------------------------------------------------------------------------------


def wire_array(values: list[Any], field_type: FieldType, value_types: set[type]) -> pa.Array:
    """A column's Python values as wire values of `field_type`: Arrow arrays built from Python
    lists in C (about 7x faster than pandas' own nullable dtypes, measured)."""
    if field_type is FieldType.DECIMAL:
        values = [None if v is None else repr(v) for v in values]
    elif field_type is FieldType.JSON:
        if not value_types <= {JsonText, type(None)}:
            values = [v if v is None or type(v) is JsonText else to_json_text(v) for v in values]
    elif field_type is FieldType.STRING and not value_types <= {str, type(None)}:
        # Nested values are JsonText already (a str); numbers and booleans as JSON spells them.
        values = [v if v is None or isinstance(v, str) else encode_json(v) for v in values]
    return pa.array(values, WIRE_ARROW_TYPES[field_type], from_pandas=True)


def rewire(array: pa.Array, source: FieldType, target: FieldType) -> pa.Array:
    """A batch's column of `source` type spelled as the whole listing spells `target` values.

    The values are taken back to what the API sent (decimal text was `repr` of a JSON number),
    then written as `wire_array` writes them for a `target` column: JSON's spelling for numbers
    and booleans in a text or JSON column, a JSON string for text in a JSON column, and a JSON
    column as text keeps its JSON text, but for JSON strings, which are their text. (A batch is
    never written as text when the listing ends as another type: text is the widest.)
    """
    if source is target:
        return array
    if array.null_count == len(array):
        return pa.nulls(len(array), WIRE_ARROW_TYPES[target])
    values = array.to_pylist()
    if source is FieldType.JSON:  # widened only to text
        decoded = (orjson.loads(v) if v is not None else None for v in values)
        return pa.array(
            [
                d if d is None or isinstance(d, str) else v
                for d, v in zip(decoded, values, strict=True)
            ],
            pa.string(),
        )
    if source is FieldType.DECIMAL:
        values = [None if v is None else _number(v) for v in values]
    if target is FieldType.DECIMAL:
        text = [None if v is None else repr(v) for v in values]
    elif target is FieldType.STRING:
        text = [None if v is None or isinstance(v, str) else encode_json(v) for v in values]
    else:
        text = [None if v is None else encode_json(v) for v in values]
    return pa.array(text, pa.string())


def _number(text: str) -> int | float:
    """The JSON number whose `repr` a decimal column holds (integers exactly, however long)."""
    return float(text) if any(c in text for c in ".eEn") else int(text)
