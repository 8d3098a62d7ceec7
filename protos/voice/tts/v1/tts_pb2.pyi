from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SynthesizeRequest(_message.Message):
    __slots__ = ("text", "voice", "sample_rate_hz")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    text: str
    voice: str
    sample_rate_hz: int
    def __init__(self, text: _Optional[str] = ..., voice: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class SynthesisConfig(_message.Message):
    __slots__ = ("voice", "sample_rate_hz")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    voice: str
    sample_rate_hz: int
    def __init__(self, voice: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class StreamingSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "sample_rate_hz", "text", "sentence_index", "sentence_end", "text_start_char", "text_end_char", "spoken_text")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_END_FIELD_NUMBER: _ClassVar[int]
    TEXT_START_CHAR_FIELD_NUMBER: _ClassVar[int]
    TEXT_END_CHAR_FIELD_NUMBER: _ClassVar[int]
    SPOKEN_TEXT_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate_hz: int
    text: str
    sentence_index: int
    sentence_end: bool
    text_start_char: int
    text_end_char: int
    spoken_text: str
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., text: _Optional[str] = ..., sentence_index: _Optional[int] = ..., sentence_end: _Optional[bool] = ..., text_start_char: _Optional[int] = ..., text_end_char: _Optional[int] = ..., spoken_text: _Optional[str] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "language", "sample_rate_hz", "backend", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    sample_rate_hz: int
    backend: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., backend: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("active_streams", "max_streams", "total_streams")
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STREAMS_FIELD_NUMBER: _ClassVar[int]
    active_streams: int
    max_streams: int
    total_streams: int
    def __init__(self, active_streams: _Optional[int] = ..., max_streams: _Optional[int] = ..., total_streams: _Optional[int] = ...) -> None: ...
