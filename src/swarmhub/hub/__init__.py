"""Sans-I/O Hugging Face Hub compatibility: repo identity, URLs, listings, patterns, cache layout."""
