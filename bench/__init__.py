"""End-to-end and per-component benchmark of the local voice agent (`python -m bench`, `make bench`).

Modules: `stats` (percentiles, WER, premature turns, targets), `fixtures` (spoken test clips),
`services` (start/attach the three gRPC services, load time, memory), `components` (STT/LLM/TTS
measured directly over gRPC), `turns` (spoken turns through the orchestrator), `report` (table,
machine info, results.json).
"""
