"""Per-component measurements made directly over gRPC (no orchestrator involved)."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from bench.fixtures import Utterance
from bench.stats import corpus_wer, ratio, summarize
from voice.llm.v1 import llm_pb2, llm_pb2_grpc
from voice.stt.v1 import stt_pb2, stt_pb2_grpc
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

Progress = Callable[[str], None]
STT_EVENT = stt_pb2.StreamingRecognizeResponse
CHUNK_MS = 20  # what a microphone callback delivers
MAX_TRAILING_SILENCE_MS = 4000  # silence streamed after the clip while waiting for FINAL

# Agent-like replies for TTS: short first sentence, as the LLM would stream them.
TTS_TEXTS = [
    "Sure. It is sunny in Paris today, with a high of twenty degrees.",
    "A leap year has three hundred and sixty six days.",
    "Okay, I set a timer for ten minutes.",
    "The capital of Australia is Canberra. Many people think it is Sydney.",
    "The moon is about three hundred and eighty four thousand kilometers away from the Earth.",
]
# (turn 1, turn 2) per session: turn 2 reuses the session's cached prompt.
LLM_DIALOGUES = [
    ("What is the weather like in Paris today?", "And what should I wear?"),
    ("How many days are there in a leap year?", "Why do we have leap years?"),
    ("What is the capital of Australia?", "How big is it?"),
    ("Can you give me a simple recipe for pancakes?", "Can I make them without eggs?"),
]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 1)


# ---------------------------------------------------------------------------------------- STT


async def stt_recognize(channel: grpc.aio.Channel, utts: list[Utterance], progress: Progress) -> dict[str, Any]:
    """Recognize (one-shot) each clip: real-time factor = server processing time ÷ audio length."""
    stub = stt_pb2_grpc.SpeechToTextStub(channel)
    rows = []
    for utt in utts:
        config = stt_pb2.RecognitionConfig(sample_rate_hz=utt.sample_rate_hz, encoding=stt_pb2.LINEAR16)
        t0 = time.perf_counter()
        reply = await stub.Recognize(stt_pb2.RecognizeRequest(config=config, audio=utt.pcm), timeout=60)
        wall = _ms(t0, time.perf_counter())
        audio_ms = reply.audio_duration_ms or utt.duration_ms
        rows.append(
            {
                "fixture": utt.name,
                "audio_ms": audio_ms,
                "processing_ms": round(reply.processing_ms, 1),
                "wall_ms": wall,
                "rtf": round(reply.processing_ms / audio_ms, 3),
                "text": reply.text,
            }
        )
        progress(f"  stt recognize {utt.name:<20} rtf={rows[-1]['rtf']:.3f} wall={wall:.0f}ms  {reply.text!r}")
    return {
        "rtf": summarize(r["rtf"] for r in rows),
        "recognize_wall_ms": summarize(r["wall_ms"] for r in rows),
        "wer": corpus_wer((u.text, r["text"]) for u, r in zip(utts, rows, strict=True)),
        "rows": rows,
    }


async def stt_stream_one(stub: stt_pb2_grpc.SpeechToTextStub, utt: Utterance) -> dict[str, Any]:
    """Stream one clip at real-time pace (20 ms chunks), then silence, until the FINAL for the whole utterance.

    Returns client-measured latencies:
      eos_to_final_ms: from sending the chunk holding the last speech sample to receiving FINAL
        (includes the endpoint silence the service waits for);
      final_after_endpoint_ms: from sending the chunk that completed the endpoint silence (the audio
        position FINAL reports) to receiving FINAL, i.e. the cost of deciding + decoding.
    """
    rate = utt.sample_rate_hz
    bytes_per_ms = rate * 2 // 1000
    chunk_bytes = CHUNK_MS * bytes_per_ms
    pad = b"\x00" * (MAX_TRAILING_SILENCE_MS * bytes_per_ms)
    audio = utt.pcm + pad
    sent: list[tuple[float, float]] = []  # (audio ms at the end of the chunk, wall time sent)
    call = stub.StreamingRecognize(timeout=60)
    config = stt_pb2.RecognitionConfig(sample_rate_hz=rate, encoding=stt_pb2.LINEAR16, interim_results=False)
    finals: list[tuple[float, Any]] = []
    candidates: list[tuple[float, Any]] = []
    done = asyncio.Event()

    async def reader() -> None:
        async for msg in call:
            if msg.event == STT_EVENT.CANDIDATE_FINAL:
                candidates.append((time.perf_counter(), msg))
            elif msg.event == STT_EVENT.FINAL:
                finals.append((time.perf_counter(), msg))
                if msg.audio_position_ms >= utt.speech_end_ms:
                    done.set()
        done.set()

    await call.write(stt_pb2.StreamingRecognizeRequest(config=config))
    read_task = asyncio.create_task(reader())
    t0 = time.perf_counter()
    try:
        for start in range(0, len(audio), chunk_bytes):
            if done.is_set():
                break
            end_ms = (start + min(chunk_bytes, len(audio) - start)) / bytes_per_ms
            delay = t0 + end_ms / 1000.0 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of the microphone, not synchronisation
            await call.write(stt_pb2.StreamingRecognizeRequest(audio=audio[start : start + chunk_bytes]))
            sent.append((end_ms, time.perf_counter()))
        await call.done_writing()
        await asyncio.wait_for(read_task, timeout=30)
    finally:
        if not read_task.done():
            read_task.cancel()
            call.cancel()

    def sent_at(audio_ms: float) -> float | None:
        for end_ms, t in sent:
            if end_ms >= audio_ms:
                return t
        return None

    row: dict[str, Any] = {"fixture": utt.name, "pause_ms": utt.pause_ms, "finals": len(finals)}
    last = [(t, m) for t, m in finals if m.audio_position_ms >= utt.speech_end_ms]
    row["premature_finals"] = len(finals) - len(last[:1])
    row["text"] = " ".join(m.text for _, m in finals).strip()
    if last:
        t_final, msg = last[0]
        t_eos = sent_at(utt.speech_end_ms)
        t_endpoint = sent_at(msg.audio_position_ms)
        row.update(
            {
                "eos_to_final_ms": _ms(t_eos, t_final) if t_eos else None,
                "final_after_endpoint_ms": _ms(t_endpoint, t_final) if t_endpoint else None,
                "endpoint_silence_ms": int(msg.audio_position_ms) - int(msg.end_ms),
                "decode_ms": round(msg.decode_ms, 1),
                "from_candidate": bool(msg.from_candidate),
            }
        )
        # The last CANDIDATE_FINAL after the end of speech: when a preemptive client can start the LLM.
        late = [t for t, m in candidates if m.end_ms >= utt.speech_end_ms - 300 and t <= t_final]
        if late and t_eos:
            row["eos_to_candidate_ms"] = _ms(t_eos, late[-1])
    return row


async def stt_streaming(channel: grpc.aio.Channel, utts: list[Utterance], progress: Progress) -> dict[str, Any]:
    stub = stt_pb2_grpc.SpeechToTextStub(channel)
    rows = []
    for utt in utts:
        row = await stt_stream_one(stub, utt)
        rows.append(row)
        progress(
            f"  stt stream    {utt.name:<20} eos->candidate={row.get('eos_to_candidate_ms')}ms "
            f"eos->final={row.get('eos_to_final_ms')}ms "
            f"after-endpoint={row.get('final_after_endpoint_ms')}ms decode={row.get('decode_ms')}ms "
            f"candidate={row.get('from_candidate')} finals={row['finals']}  {row['text']!r}"
        )
    reused = [r["from_candidate"] for r in rows if "from_candidate" in r]
    return {
        "eos_to_final_ms": summarize(r.get("eos_to_final_ms") for r in rows),
        "eos_to_candidate_ms": summarize(r.get("eos_to_candidate_ms") for r in rows),
        "final_after_endpoint_ms": summarize(r.get("final_after_endpoint_ms") for r in rows),
        "endpoint_silence_ms": summarize(r.get("endpoint_silence_ms") for r in rows),
        "final_decode_ms": summarize(r.get("decode_ms") for r in rows),
        "final_from_candidate_rate": round(sum(reused) / len(reused), 2) if reused else None,
        "premature_finals": sum(r["premature_finals"] for r in rows),
        "streaming_wer": corpus_wer((u.text, r["text"]) for u, r in zip(utts, rows, strict=True)),
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------- LLM


async def llm_generate(
    stub: llm_pb2_grpc.LanguageModelStub, text: str, session_id: str, max_tokens: int
) -> dict[str, Any]:
    request = llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content=text)],
        session_id=session_id,
        max_tokens=max_tokens,
        sampling=llm_pb2.SamplingOptions(seed=7),
    )
    t0 = time.perf_counter()
    first: float | None = None
    summary = None
    async for msg in stub.Generate(request, timeout=120):
        if msg.text and first is None:
            first = time.perf_counter()
        if msg.HasField("final"):
            summary = msg.final
    t_end = time.perf_counter()
    row: dict[str, Any] = {
        "ttft_client_ms": _ms(t0, first) if first else None,
        "total_ms": _ms(t0, t_end),
    }
    if summary is not None:
        row.update(
            {
                "ttft_server_ms": round(summary.time_to_first_token_ms, 1),
                "tokens_per_second": round(summary.tokens_per_second, 1),
                "prompt_tokens": summary.prompt_tokens,
                "cached_prompt_tokens": summary.cached_prompt_tokens,
                "completion_tokens": summary.completion_tokens,
                "queue_wait_ms": round(summary.queue_wait_ms, 1),
                "text": summary.text,
            }
        )
        if first and summary.completion_tokens > 1:
            row["tokens_per_second_client"] = round((summary.completion_tokens - 1) / (t_end - first), 1)
    return row


async def llm_bench(channel: grpc.aio.Channel, progress: Progress, max_tokens: int = 64) -> dict[str, Any]:
    """Two turns on each of several sessions: time to first token (server + client), tokens/s, cache reuse."""
    stub = llm_pb2_grpc.LanguageModelStub(channel)
    run = uuid.uuid4().hex[:8]
    turn1: list[dict[str, Any]] = []
    turn2: list[dict[str, Any]] = []
    for i, (q1, q2) in enumerate(LLM_DIALOGUES):
        session = f"bench-llm-{run}-{i}"
        for turn, question, bucket in ((1, q1, turn1), (2, q2, turn2)):
            row = await llm_generate(stub, question, session, max_tokens)
            row["turn"] = turn
            bucket.append(row)
            progress(
                f"  llm session {i} turn {turn}: ttft client={row['ttft_client_ms']}ms server={row.get('ttft_server_ms')}ms "
                f"tok/s={row.get('tokens_per_second')} prompt={row.get('prompt_tokens')} "
                f"cached={row.get('cached_prompt_tokens')} out={row.get('completion_tokens')}"
            )
        try:
            await stub.ResetSession(llm_pb2.ResetSessionRequest(session_id=session), timeout=10)
        except grpc.aio.AioRpcError:
            pass
    rows = turn1 + turn2
    t1 = summarize(r["ttft_client_ms"] for r in turn1)
    t2 = summarize(r["ttft_client_ms"] for r in turn2)
    return {
        "ttft_client_ms": summarize(r["ttft_client_ms"] for r in rows),
        "ttft_server_ms": summarize(r.get("ttft_server_ms") for r in rows),
        "ttft_turn1_ms": t1,
        "ttft_turn2_ms": t2,
        "ttft_turn2_over_turn1": ratio(t2["p50"], t1["p50"]),
        "tokens_per_second": summarize(r.get("tokens_per_second") for r in rows),
        "tokens_per_second_client": summarize(r.get("tokens_per_second_client") for r in rows),
        "completion_tokens": summarize(r.get("completion_tokens") for r in rows),
        "cached_prompt_tokens_turn2": summarize(r.get("cached_prompt_tokens") for r in turn2),
        "max_tokens": max_tokens,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------- TTS


async def tts_synthesize(stub: tts_pb2_grpc.TextToSpeechStub, text: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    first: float | None = None
    first_sentence_end: float | None = None
    samples = 0
    rate = 0
    async for msg in stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=120):
        if msg.audio:
            if first is None:
                first = time.perf_counter()
            samples += len(msg.audio) // 2
            rate = msg.sample_rate_hz or rate
        if msg.sentence_end and first_sentence_end is None:
            first_sentence_end = time.perf_counter()
    wall = time.perf_counter() - t0
    audio_s = samples / rate if rate else 0.0
    return {
        "text": text,
        "ttfa_ms": _ms(t0, first) if first else None,
        "first_sentence_ms": _ms(t0, first_sentence_end) if first_sentence_end else None,
        "wall_ms": round(wall * 1000, 1),
        "audio_ms": round(audio_s * 1000, 1),
        "rtf": round(wall / audio_s, 3) if audio_s else None,
        "sample_rate_hz": rate,
    }


async def tts_bench(channel: grpc.aio.Channel, progress: Progress, repeats: int = 2) -> dict[str, Any]:
    """Synthesize agent-like replies: client time to first audio and real-time factor (wall ÷ audio length)."""
    stub = tts_pb2_grpc.TextToSpeechStub(channel)
    rows = []
    for _ in range(repeats):
        for text in TTS_TEXTS:
            row = await tts_synthesize(stub, text)
            rows.append(row)
            progress(
                f"  tts synthesize ttfa={row['ttfa_ms']}ms rtf={row['rtf']} audio={row['audio_ms']:.0f}ms  {text[:40]!r}"
            )
    return {
        "ttfa_ms": summarize(r["ttfa_ms"] for r in rows),
        "first_sentence_ms": summarize(r["first_sentence_ms"] for r in rows),
        "rtf": summarize(r["rtf"] for r in rows),
        "rows": rows,
    }


# ------------------------------------------------------------------------------------- warm-up


async def warm_up(channels: dict[str, grpc.aio.Channel], utt: Utterance) -> None:
    """One call per service so first-call costs (allocations, caches) stay out of the measurements."""
    stt = stt_pb2_grpc.SpeechToTextStub(channels["stt"])
    config = stt_pb2.RecognitionConfig(sample_rate_hz=utt.sample_rate_hz, encoding=stt_pb2.LINEAR16)
    await stt.Recognize(stt_pb2.RecognizeRequest(config=config, audio=utt.pcm), timeout=120)
    llm = llm_pb2_grpc.LanguageModelStub(channels["llm"])
    await llm_generate(llm, "Hello!", "", 16)
    tts = tts_pb2_grpc.TextToSpeechStub(channels["tts"])
    await tts_synthesize(tts, "Hello there. This is a warm-up.")


async def service_stats(channels: dict[str, grpc.aio.Channel]) -> dict[str, Any]:
    """GetStats of each service after the run (active counts should be back to 0)."""
    out: dict[str, Any] = {}
    calls = {
        "stt": lambda: stt_pb2_grpc.SpeechToTextStub(channels["stt"]).GetStats(stt_pb2.GetStatsRequest(), timeout=5),
        "llm": lambda: llm_pb2_grpc.LanguageModelStub(channels["llm"]).GetStats(llm_pb2.GetStatsRequest(), timeout=5),
        "tts": lambda: tts_pb2_grpc.TextToSpeechStub(channels["tts"]).GetStats(tts_pb2.GetStatsRequest(), timeout=5),
    }
    for extra in sorted(set(channels) - set(calls)):  # e.g. the --compare-burst llm-service
        calls[extra] = functools.partial(
            llm_pb2_grpc.LanguageModelStub(channels[extra]).GetStats, llm_pb2.GetStatsRequest(), timeout=5
        )
    for kind, call in calls.items():
        try:
            reply = await call()
            out[kind] = {f.name: v for f, v in reply.ListFields()}
        except grpc.aio.AioRpcError as error:
            out[kind] = {"error": f"{error.code().name}: {error.details()}"}
    return out
