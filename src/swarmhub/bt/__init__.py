"""Sans-I/O BitTorrent: bencode, layouts and piece arithmetic, merkle trees, metainfo, magnet links."""
