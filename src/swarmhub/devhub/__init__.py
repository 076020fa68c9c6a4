"""A local Hugging Face Hub-compatible origin serving plain folders as repos, with fault injection.

Used by the tests as an origin they control (ranges, faults, redirects, rate limits, gated repos) and by
the quick-start demo as the embedded local origin::

    with DevHub(root) as hub:             # ROOT/models/ORG/NAME/..., ROOT/datasets/ORG/NAME/...
        hf_hub_download("org/name", "config.json", endpoint=hub.endpoint)
        hub.faults.respond("/lfs/*", 503, times=1)
        hub.log.entries("/lfs/*")

Modules: ``repos`` (folders -> files, etags, commit, tree; no HTTP), ``app`` (the origin and CDN ASGI apps),
``faults`` (fault rules and the request log), ``server`` (uvicorn in a thread, or in the foreground).
"""

from swarmhub.devhub.app import DevHubSettings, DevHubState, cdn_app, origin_app
from swarmhub.devhub.faults import (
    Corrupt,
    Delay,
    FaultRule,
    Faults,
    LoggedRequest,
    RequestLog,
    Reset,
    Respond,
    rules_from_json,
)
from swarmhub.devhub.repos import RepoSnapshot, RepoStore, ServedFile
from swarmhub.devhub.server import DevHub, serve_forever

__all__ = [
    "Corrupt",
    "Delay",
    "DevHub",
    "DevHubSettings",
    "DevHubState",
    "FaultRule",
    "Faults",
    "LoggedRequest",
    "RepoSnapshot",
    "RepoStore",
    "RequestLog",
    "Reset",
    "Respond",
    "ServedFile",
    "cdn_app",
    "origin_app",
    "rules_from_json",
    "serve_forever",
]
