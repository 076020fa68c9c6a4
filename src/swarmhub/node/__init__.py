"""The node: pulling releases into the Hugging Face cache, seeding them, the Hub-compatible endpoint."""
