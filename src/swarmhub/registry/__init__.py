"""The registry: catalog (SQLite), JSON API, website, tracker and web-seed gateway in one process."""
