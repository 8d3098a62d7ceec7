from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    STOP: _ClassVar[FinishReason]
    LENGTH: _ClassVar[FinishReason]
FINISH_REASON_UNSPECIFIED: FinishReason
STOP: FinishReason
LENGTH: FinishReason

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingOptions(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "repeat_penalty", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., repeat_penalty: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("messages", "session_id", "max_tokens", "sampling", "turn_id", "score_end_of_turn", "history")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    session_id: str
    max_tokens: int
    sampling: SamplingOptions
    turn_id: str
    score_end_of_turn: bool
    history: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., session_id: _Optional[str] = ..., max_tokens: _Optional[int] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., turn_id: _Optional[str] = ..., score_end_of_turn: _Optional[bool] = ..., history: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class GenerationSummary(_message.Message):
    __slots__ = ("finish_reason", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "time_to_first_token_ms", "tokens_per_second", "queue_wait_ms", "dropped_messages", "text", "kv_cache_hit")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    tokens_per_second: float
    queue_wait_ms: float
    dropped_messages: int
    text: str
    kv_cache_hit: bool
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., time_to_first_token_ms: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., queue_wait_ms: _Optional[float] = ..., dropped_messages: _Optional[int] = ..., text: _Optional[str] = ..., kv_cache_hit: _Optional[bool] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "final", "end_of_turn_probability")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    final: GenerationSummary
    end_of_turn_probability: float
    def __init__(self, text: _Optional[str] = ..., final: _Optional[_Union[GenerationSummary, _Mapping]] = ..., end_of_turn_probability: _Optional[float] = ...) -> None: ...

class ResetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ResetSessionResponse(_message.Message):
    __slots__ = ("dropped_messages",)
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    dropped_messages: int
    def __init__(self, dropped_messages: _Optional[int] = ...) -> None: ...

class RecordHeardReplyRequest(_message.Message):
    __slots__ = ("session_id", "heard_text")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARD_TEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    heard_text: str
    def __init__(self, session_id: _Optional[str] = ..., heard_text: _Optional[str] = ...) -> None: ...

class RecordHeardReplyResponse(_message.Message):
    __slots__ = ("stored_text",)
    STORED_TEXT_FIELD_NUMBER: _ClassVar[int]
    stored_text: str
    def __init__(self, stored_text: _Optional[str] = ...) -> None: ...

class DiscardTurnRequest(_message.Message):
    __slots__ = ("session_id", "turn_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ...) -> None: ...

class DiscardTurnResponse(_message.Message):
    __slots__ = ("removed_messages",)
    REMOVED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    removed_messages: int
    def __init__(self, removed_messages: _Optional[int] = ...) -> None: ...

class PrefillRequest(_message.Message):
    __slots__ = ("session_id", "text")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class PrefillResponse(_message.Message):
    __slots__ = ("end_of_turn_probability", "prompt_tokens", "cached_prompt_tokens", "prefill_ms", "queue_wait_ms", "superseded")
    END_OF_TURN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    end_of_turn_probability: float
    prompt_tokens: int
    cached_prompt_tokens: int
    prefill_ms: float
    queue_wait_ms: float
    superseded: bool
    def __init__(self, end_of_turn_probability: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., prefill_ms: _Optional[float] = ..., queue_wait_ms: _Optional[float] = ..., superseded: _Optional[bool] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("messages", "history_tokens", "context_tokens")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    history_tokens: int
    context_tokens: int
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., history_tokens: _Optional[int] = ..., context_tokens: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("live_sessions", "max_sessions", "active_generations", "queued_generations", "max_queued", "generations_total", "kv_cache_hits_total", "kv_cache_misses_total", "burst_granted_total", "burst_refused_busy_total", "burst_stalls_total", "burst_refused_shared_total")
    LIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_HITS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_MISSES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BURST_GRANTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BURST_REFUSED_BUSY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BURST_STALLS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BURST_REFUSED_SHARED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    live_sessions: int
    max_sessions: int
    active_generations: int
    queued_generations: int
    max_queued: int
    generations_total: int
    kv_cache_hits_total: int
    kv_cache_misses_total: int
    burst_granted_total: int
    burst_refused_busy_total: int
    burst_stalls_total: int
    burst_refused_shared_total: int
    def __init__(self, live_sessions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., active_generations: _Optional[int] = ..., queued_generations: _Optional[int] = ..., max_queued: _Optional[int] = ..., generations_total: _Optional[int] = ..., kv_cache_hits_total: _Optional[int] = ..., kv_cache_misses_total: _Optional[int] = ..., burst_granted_total: _Optional[int] = ..., burst_refused_busy_total: _Optional[int] = ..., burst_stalls_total: _Optional[int] = ..., burst_refused_shared_total: _Optional[int] = ...) -> None: ...
