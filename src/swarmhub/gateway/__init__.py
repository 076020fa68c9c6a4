"""The BEP 19 web-seed gateway the registry serves under ``/webseed``: files of published releases, streamed
from the origin with exact ranges, pads as zeros, transient upstream errors absorbed.

Modules: ``paths`` (URLs and what a request names; no I/O), ``ranges`` (Range headers; no I/O), ``app``
(the ASGI routes, streaming, retries and counters).
"""

from swarmhub.gateway.app import Gateway, Lookup, ReleaseKey
from swarmhub.gateway.paths import PadFile, WebseedPath, webseed_url
from swarmhub.gateway.ranges import ByteRange, RangeNotSatisfiable, parse_range

__all__ = [
    "ByteRange",
    "Gateway",
    "Lookup",
    "PadFile",
    "RangeNotSatisfiable",
    "ReleaseKey",
    "WebseedPath",
    "parse_range",
    "webseed_url",
]
