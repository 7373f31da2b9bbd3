"""The one row schema every source is read into (prepare) and the filter keeps: id, source, kind (text | chat),
text or messages (roles system/user/assistant), meta (url, title where known)."""
from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
ROWS = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("meta", pa.struct([("url", pa.string()), ("title", pa.string())])),
    ]
)
