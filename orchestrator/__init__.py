"""Orchestrator: the client that chains STT, LLM and TTS."""
