"""The LocalAgreement experiment (bench/agreed_prefix_check.py): which tokens two INTERIM hypotheses
agree on (fast, no model), and that forcing them leaves the candidate's text unchanged (real tiny.en)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.agreed_prefix_check import agreed_prefix, first_words, simulate, word_starts
from bench.fixtures import load_utterances
from stt_service.endpointing import EndpointConfig
from stt_service.recognizer import pcm16_to_float

# Fake tokens: strings; a word's first token starts with a space, as Whisper's do.
VOCAB = [" What", " is", " the", " weather", " like", " in", " Par", "is", " to", "day", "?", " Pa", "ul", " now"]
IDS = {text: i for i, text in enumerate(VOCAB)}


def ids(*texts: str) -> list[int]:
    return [IDS[t] for t in texts]


def starts_word(token: int) -> bool:
    return VOCAB[token].startswith(" ")


def texts(tokens: list[int]) -> str:
    return "".join(VOCAB[t] for t in tokens)


def test_the_last_agreed_word_is_not_forced() -> None:
    a = ids(" What", " is", " the", " weather")
    b = ids(" What", " is", " the", " weather", " like", " in")
    assert texts(agreed_prefix([a, b], starts_word)) == " What is the"


def test_agreement_stops_before_a_word_whose_tokens_differ() -> None:
    a = ids(" What", " is", " the", " weather", " like", " in", " Par", "is")
    b = ids(" What", " is", " the", " weather", " like", " in", " Pa", "ul", " now")
    assert texts(agreed_prefix([a, b], starts_word)) == " What is the weather like"
    # Disagreeing inside a word (" Par" "is" vs " Par" " now"): only the words before it are kept.
    c = ids(" What", " is", " Par", "is")
    d = ids(" What", " is", " Par", " now")
    assert texts(agreed_prefix([c, d], starts_word)) == " What is"


def test_only_the_last_two_hypotheses_count() -> None:
    old = ids(" What", " is")
    a = ids(" What", " is", " the", " weather", " like")
    b = ids(" What", " is", " the", " weather", " like", " in")
    assert texts(agreed_prefix([old, a, b], starts_word)) == " What is the weather"


@pytest.mark.parametrize(
    "hypotheses",
    [
        [],
        [ids(" What", " is", " the")],  # one interim: nothing confirmed yet
        [ids(" What", " is"), ids(" Pa", "ul")],  # no common start
        [ids(" What"), ids(" What", " is", " the")],  # one agreed word, and the last is never forced
        [ids(" Par", "is"), ids(" Par", " now")],  # the first word's tokens differ
    ],
)
def test_nothing_is_forced_without_a_whole_agreed_word_before_the_last(hypotheses: list[list[int]]) -> None:
    assert agreed_prefix(hypotheses, starts_word) == []


def test_words_and_first_words() -> None:
    tokens = ids(" What", " is", " the", " weather", " to", "day", "?")
    assert word_starts(tokens, starts_word) == [0, 1, 2, 3, 4]
    assert texts(first_words(tokens, 2, starts_word)) == " What is"
    assert texts(first_words(tokens, -2, starts_word)) == " What is the"
    assert first_words(tokens, -9, starts_word) == []
    assert first_words(tokens, 9, starts_word) == tokens


@pytest.mark.real
def test_a_candidate_decoded_with_the_agreed_prefix_reads_the_same() -> None:
    from stt_service.backends import bundled_model_dir
    from stt_service.ct2_engine import FasterWhisperEngine
    from stt_service.vad import SileroVad

    engine = FasterWhisperEngine(str(bundled_model_dir()), threads=1)
    (utt,) = load_utterances(names=["weather_paris"])
    audio = pcm16_to_float(utt.pcm)
    candidates = simulate(engine, SileroVad(), utt.name, audio, EndpointConfig(interim=True, hints=True))
    cand = candidates[-1]

    def word(token: int) -> bool:
        return engine.token_text(token, "en").startswith(" ")

    agreed = agreed_prefix(cand.interims, word)
    assert len(cand.interims) >= 2 and len(agreed) >= 3, "the fixture must give an agreement to force"
    forced = engine.transcribe(cand.audio, "en", prefix_tokens=agreed)
    free = engine.transcribe(cand.audio, "en")
    assert free.text == cand.decoded.text == "What is the weather like in Paris today?"
    assert forced.text == free.text
    assert list(forced.tokens[: len(agreed)]) == agreed and forced.tokens == free.tokens
    assert np.isfinite(forced.avg_logprob)
