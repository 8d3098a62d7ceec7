"""TTS service."""
