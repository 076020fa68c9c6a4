"""swarmhub: open model weights over BitTorrent, with Hugging Face as the always-available fallback."""

__version__ = "0.1.0"
__all__ = ["__version__"]
