"""STT service."""
