"""The node: landing releases in the Hugging Face cache, seeding, the Hub-compatible endpoint (later issues)."""
