"""Fetching from Hub-compatible origins: resolving revisions, listing files, ranged reads with retries."""
