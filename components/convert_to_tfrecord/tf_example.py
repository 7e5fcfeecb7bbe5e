"""tf.train.Example in protobuf wire format, written without TensorFlow.

Workers serialize their image's Example themselves and send back one bytes object: TensorFlow
cannot be imported there (its import alone is ~3 s and ~800 MB), and building the Example in the
parent cost it more CPU than writing the record. The bytes are those of TensorFlow's
`SerializeToString(deterministic=True)` (tests compare them):

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }      map entry: { key = 1; value = 2; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                             Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }      little-endian float32s
    Int64List { repeated int64 value = 1 [packed]; }      varints, negatives in 10 bytes

Deterministic serialization writes map entries sorted by key: by their bytes, when no key is a
prefix of another (there Python's upb puts the longer key first, C++ the shorter; FEATURE_KINDS
has no such pair). An empty packed list is left out, so an empty list's Feature still holds its
(empty) list message.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ..common.tfrecords import BYTES, FLOAT, INT64

KIND_FIELDS = {BYTES: 1, FLOAT: 2, INT64: 3}  # Feature's field for each kind of list
LENGTH_DELIMITED = 2  # the wire type of bytes, strings, messages and packed lists
UINT64_MASK = (1 << 64) - 1


def encode_example(features: Mapping[str, list], kinds: Mapping[str, str]) -> bytes:
    """The serialized tf.train.Example of `features` (key -> values), each key's list of the
    kind `kinds[key]` (BYTES, FLOAT or INT64)."""
    entries = []
    for key in sorted(features, key=str.encode):
        feature = _message(KIND_FIELDS[kinds[key]], _list(kinds[key], features[key]))
        entries += _message(1, [_field(1, key.encode("utf-8")), *_message(2, feature)])
    parts = _message(1, entries)
    return b"".join(parts)


def _list(kind: str, values: list) -> list[bytes]:
    """The parts of a BytesList, FloatList or Int64List message."""
    if kind == BYTES:
        return [part for value in values for part in (_key_and_length(1, len(value)), value)]
    if not values:
        return []
    if kind == FLOAT:
        packed = struct.pack(f"<{len(values)}f", *values)
    else:
        packed = b"".join(_varint(value & UINT64_MASK) for value in values)
    return [_field(1, packed)]


def _message(number: int, parts: list[bytes]) -> list[bytes]:
    """A length-delimited field holding the concatenation of `parts`, as parts: large values
    (the image) are copied once, by the final join."""
    return [_key_and_length(number, sum(map(len, parts))), *parts]


def _field(number: int, value: bytes) -> bytes:
    return _key_and_length(number, len(value)) + value


def _key_and_length(number: int, length: int) -> bytes:
    return _varint(number << 3 | LENGTH_DELIMITED) + _varint(length)


def _varint(value: int) -> bytes:
    """Base-128, least significant group first, the high bit set on all but the last byte."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
