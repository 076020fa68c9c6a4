"""Test-wide isolation: no Hub, no user's token or cache, no Xet; every origin is a local one."""

from __future__ import annotations

import os
import tempfile

pytest_plugins = (
    "support.pulled",  # the pull tests' release and seeded cache, for test_pull and test_node
    "support.old_hub",  # old_client: huggingface_hub 0.36 in its own venv
)

# Set before anything imports huggingface_hub (it reads these at import time) and inherited by the
# `swarmhub` subprocesses the tests start.
_HOME = tempfile.mkdtemp(prefix="swarmhub-tests-hf-")
for name in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "SWARMHUB_UPSTREAM",
    "HF_HUB_CACHE",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
):
    os.environ.pop(name, None)
os.environ.update(
    HF_HOME=_HOME,
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    # An endpoint nothing listens on: a test that forgets --endpoint fails fast instead of reaching out.
    HF_ENDPOINT="http://127.0.0.1:9",
)
