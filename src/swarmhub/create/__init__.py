"""Streaming torrent creation: hash a release's bytes as they arrive (from the origin or a folder)."""
