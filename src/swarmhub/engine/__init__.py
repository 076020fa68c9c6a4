"""The one seam to libtorrent: nothing outside this package imports it."""
