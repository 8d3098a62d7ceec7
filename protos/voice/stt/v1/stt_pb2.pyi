from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR16: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR16: AudioEncoding

class RecognitionConfig(_message.Message):
    __slots__ = ("sample_rate_hz", "encoding", "language", "interim_results", "endpoint_silence_ms", "candidate_silence_ms", "min_endpoint_silence_ms", "end_of_turn_hints", "hinted_endpoint_silence_ms")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_ENDPOINT_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_HINTS_FIELD_NUMBER: _ClassVar[int]
    HINTED_ENDPOINT_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    encoding: AudioEncoding
    language: str
    interim_results: bool
    endpoint_silence_ms: int
    candidate_silence_ms: int
    min_endpoint_silence_ms: int
    end_of_turn_hints: bool
    hinted_endpoint_silence_ms: int
    def __init__(self, sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., language: _Optional[str] = ..., interim_results: _Optional[bool] = ..., endpoint_silence_ms: _Optional[int] = ..., candidate_silence_ms: _Optional[int] = ..., min_endpoint_silence_ms: _Optional[int] = ..., end_of_turn_hints: _Optional[bool] = ..., hinted_endpoint_silence_ms: _Optional[int] = ...) -> None: ...

class EndOfTurnHint(_message.Message):
    __slots__ = ("text", "probability")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    probability: float
    def __init__(self, text: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio", "end_of_turn")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    end_of_turn: EndOfTurnHint
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., end_of_turn: _Optional[_Union[EndOfTurnHint, _Mapping]] = ...) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("event", "text", "is_final", "utterance_index", "start_ms", "end_ms", "audio_position_ms", "decode_ms", "from_candidate", "endpoint_silence_ms")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_TYPE_UNSPECIFIED: _ClassVar[StreamingRecognizeResponse.EventType]
        SPEECH_STARTED: _ClassVar[StreamingRecognizeResponse.EventType]
        INTERIM: _ClassVar[StreamingRecognizeResponse.EventType]
        CANDIDATE_FINAL: _ClassVar[StreamingRecognizeResponse.EventType]
        CANDIDATE_RETRACTED: _ClassVar[StreamingRecognizeResponse.EventType]
        FINAL: _ClassVar[StreamingRecognizeResponse.EventType]
    EVENT_TYPE_UNSPECIFIED: StreamingRecognizeResponse.EventType
    SPEECH_STARTED: StreamingRecognizeResponse.EventType
    INTERIM: StreamingRecognizeResponse.EventType
    CANDIDATE_FINAL: StreamingRecognizeResponse.EventType
    CANDIDATE_RETRACTED: StreamingRecognizeResponse.EventType
    FINAL: StreamingRecognizeResponse.EventType
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_POSITION_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    event: StreamingRecognizeResponse.EventType
    text: str
    is_final: bool
    utterance_index: int
    start_ms: int
    end_ms: int
    audio_position_ms: int
    decode_ms: float
    from_candidate: bool
    endpoint_silence_ms: int
    def __init__(self, event: _Optional[_Union[StreamingRecognizeResponse.EventType, str]] = ..., text: _Optional[str] = ..., is_final: _Optional[bool] = ..., utterance_index: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., audio_position_ms: _Optional[int] = ..., decode_ms: _Optional[float] = ..., from_candidate: _Optional[bool] = ..., endpoint_silence_ms: _Optional[int] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class RecognizedSegment(_message.Message):
    __slots__ = ("text", "start_ms", "end_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_ms: int
    end_ms: int
    def __init__(self, text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("text", "segments", "audio_duration_ms", "processing_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    segments: _containers.RepeatedCompositeFieldContainer[RecognizedSegment]
    audio_duration_ms: int
    processing_ms: float
    def __init__(self, text: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[RecognizedSegment, _Mapping]]] = ..., audio_duration_ms: _Optional[int] = ..., processing_ms: _Optional[float] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("active_sessions", "max_sessions", "total_sessions")
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    active_sessions: int
    max_sessions: int
    total_sessions: int
    def __init__(self, active_sessions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., total_sessions: _Optional[int] = ...) -> None: ...
