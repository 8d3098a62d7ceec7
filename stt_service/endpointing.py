"""Utterance segmentation and adaptive endpointing as a pure state machine (no model, no I/O).

`UtteranceTracker.step(p)` takes one VAD speech probability per 32 ms frame and returns
actions for the recognizer (emit an event, start a decode). Time is audio time (samples), so
the outcome does not depend on how fast the client sends audio.

Endpointing policy (per utterance):
  * speech starts at the first frame with p >= threshold -> SPEECH_STARTED;
  * after `candidate_ms` of silence the utterance is decoded speculatively; its text is sent
    as CANDIDATE_FINAL (empty text is not sent);
  * the endpoint is adaptive: `min_endpoint_ms` of silence when the candidate text looks
    complete (terminal . ? !, last word not a conjunction/preposition/article/filler...),
    `endpoint_ms` when it looks unfinished. With `hints` (the client scores each candidate with
    a language model's end-of-turn probability, `on_hint`), the meaning decides instead of the
    punctuation: a text that trails off (word lists, "," "...") waits `endpoint_ms`; else the
    hint maps to a silence: `hinted_endpoint_ms` when sure (>= `hint_high`, or `hint_sure` for a
    text without a final . ? !), `endpoint_ms` below `hint_low` (unfinished) and from there up to
    `max_endpoint_ms` as a hint below `hint_unfinished` nears 0, in between (likely finished)
    from `likely_endpoint_ms` down to `min_endpoint_ms` as the hint nears sure; until the hint
    arrives the utterance waits (at most `endpoint_ms`). The endpoint needs the
    candidate text: if it is not decoded yet when the short endpoint is reached, the tracker
    blocks (`blocked`) until `on_candidate` is called, then decides on the audio seen up to that frame;
  * speech resuming after a candidate -> CANDIDATE_RETRACTED and the utterance goes on;
  * at the endpoint FINAL reuses the candidate text (no decode after the endpoint decision).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from stt_service.vad import FRAME

SAMPLE_RATE = 16_000

# Words after which a speaker is probably not done (conjunctions, prepositions, articles,
# possessives, fillers, subject pronouns, relative words).
INCOMPLETE_LAST_WORDS = frozenset(
    """
    and but or so nor yet then because cause cuz if unless although though while whereas since than
    as that which who whom whose where when whether
    the a an this these those my your his her its our their some any every each
    to of in on at by for from with without about into onto over under between through after before
    during near around against toward towards across along behind beyond via per
    um umm uh uhh er erm hmm mm ah eh like
    i i'm i'd i'll i've we we're they they're let's it's there's what's
    """.split()
)
# Two-word endings that announce more to come ("Can you tell me [pause] how far ...").
INCOMPLETE_ENDINGS = frozenset(
    {"tell me", "show me", "give me", "let me", "remind me", "ask you", "wondering if", "want to", "need to"}
)


def trails_off(text: str) -> bool:
    """True when `text` ends in a way that announces more (punctuation aside): a conjunction,
    preposition, article, filler... (the word lists), "," "..." ":" ";" "-", a list read out
    whose last item has no "and"/"or" before it ("eggs, milk." / "one, two, three"), or digits
    read out ("five five five")."""
    text = text.strip()
    if text.endswith(("...", "…", ",", "-", ":", ";")):
        return True
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return False
    if words[-1] in INCOMPLETE_LAST_WORDS or " ".join(words[-2:]) in INCOMPLETE_ENDINGS:
        return True
    return _open_list(text) or _read_out(text)


# Short closing words after a comma that end a sentence ("..., please.") rather than a list.
LIST_CLOSERS = frozenset("please thanks thank you too right okay ok now today tonight tomorrow again".split())


def _open_list(text: str) -> bool:
    items = [item.strip(" .?!").lower() for item in text.split(",")]
    if len(items) < 2:
        return False
    last = items[-1].split()
    return 0 < len(last) <= 2 and not {"and", "or"} & set(last) and last[-1] not in LIST_CLOSERS


# Spoken digits: a number read out digit by digit (phone numbers, codes) goes on in groups.
DIGIT_WORDS = frozenset("zero oh one two three four five six seven eight nine".split())


def _read_out(text: str) -> bool:
    """The last three words are digits / spoken digits ("five five five", "5 5 5") or one word said
    three times (tiny.en heard "five five five" as "time time time"): a read-out, more to come."""
    last = re.findall(r"[a-z0-9']+", text.lower())[-3:]
    if len(last) < 3:
        return False
    return len(set(last)) == 1 or all(word in DIGIT_WORDS or word.isdigit() for word in last)


def looks_complete(text: str) -> bool:
    """True when `text` reads like a finished turn; empty text counts as complete (nothing to wait for)."""
    text = text.strip()
    if not text:
        return True
    return text.endswith((".", "?", "!")) and not trails_off(text)


@dataclass(frozen=True)
class EndpointConfig:
    endpoint_ms: int = 1000  # silence that ends an utterance that looks unfinished
    min_endpoint_ms: int = 320  # silence that ends an utterance that looks complete
    candidate_ms: int = 160  # silence after which the utterance is decoded speculatively
    interim: bool = False
    interim_interval_ms: int = 700  # new voiced audio between two INTERIM decodes
    threshold: float = 0.5  # VAD probability that starts / resumes speech
    neg_threshold: float = 0.35  # below this, speech is paused (hysteresis)
    max_window_s: float = 25.0  # longer utterances are decoded in pieces split at a pause
    pre_pad_ms: int = 200  # audio before the VAD start given to the decoder
    post_pad_ms: int = 200  # audio after the last voiced frame given to the decoder
    hints: bool = False  # the client sends end-of-turn probabilities for candidate texts
    hinted_endpoint_ms: int = 200  # silence that ends an utterance the hint calls finished
    # End-of-turn probability bands (thresholds from bench/endpoint_replay.py on the fixtures):
    hint_high: float = 0.85  # at or above: sure it is finished (hinted_endpoint_ms)
    hint_sure: float = 0.92  # the same for a text without final . ? ! (tiny.en drops the mark at will)
    hint_low: float = 0.7  # below: unfinished (endpoint_ms); from here up to sure: likely finished
    likely_endpoint_ms: int = 600  # likely finished: this at hint_low, down to min_endpoint_ms near sure
    # Surely unfinished (hint below hint_unfinished: "Can you remind me to", "I'm calling because"):
    # from endpoint_ms there up to max_endpoint_ms at 0, for a speaker who stops to think (JFK paused
    # 1.12 s after a 0.0). Finished turns rarely score this low (bench/endpoint_replay.py: 2 of 25,
    # both garbled digit read-outs), so the wait costs little where it is wrong.
    hint_unfinished: float = 0.2
    max_endpoint_ms: int = 2000


class ActionKind(enum.Enum):
    SPEECH_STARTED = "speech_started"
    DECODE_INTERIM = "decode_interim"  # best effort: may be skipped when the decoder is busy
    DECODE_CANDIDATE = "decode_candidate"  # must run; answer with on_candidate(candidate_id, text)
    DECODE_COMMIT = "decode_commit"  # a closed piece of a long utterance; its text prefixes the rest
    CANDIDATE = "candidate"  # emit CANDIDATE_FINAL with `text`
    RETRACT = "retract"  # emit CANDIDATE_RETRACTED
    FINAL = "final"  # emit FINAL with `text` (from the candidate)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    utterance: int
    position: int  # samples of audio processed when the action was produced
    start: int = 0  # samples: speech start (events) or decode window start
    end: int = 0  # samples: last voiced sample (events) or decode window end
    text: str = ""
    candidate_id: int = 0
    endpoint_ms: int = 0  # FINAL: the endpoint silence that was applied
    speech_end: int = 0  # decode actions: the last voiced sample


@dataclass
class _Candidate:
    id: int
    end: int  # utterance end (last voiced sample) it covers
    text: str | None = None
    emitted: bool = False


@dataclass
class Utterance:
    index: int
    start: int  # first voiced sample
    end: int  # one past the last voiced sample
    decode_from: int  # start of the audio not yet committed (incl. pre-padding for the first piece)
    speaking: bool = True
    voiced_since_interim: int = 0
    candidate: _Candidate | None = None
    probs: list[float] = field(default_factory=list)  # VAD per frame, from probs_from on
    probs_from: int = 0


class UtteranceTracker:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.position = 0  # samples processed
        self.utterance: Utterance | None = None
        self.next_index = 0
        self._last_end = 0  # end of the previous utterance (pre-padding never reaches before it)
        self._next_candidate_id = 1
        self._ms = SAMPLE_RATE // 1000
        self._hint: tuple[str, float] | None = None  # last (text, probability) from on_hint

    @property
    def blocked(self) -> bool:
        """True while the endpoint decision waits for the candidate's text."""
        utt = self.utterance
        if utt is None or utt.speaking or utt.candidate is None or utt.candidate.text is not None:
            return False
        shortest = min(self.config.min_endpoint_ms, self.config.hinted_endpoint_ms if self.config.hints else 10**9)
        return self.position - utt.end >= shortest * self._ms

    def step(self, prob: float) -> list[Action]:
        assert not self.blocked, "step() while blocked: call on_candidate() first"
        cfg = self.config
        frame_start = self.position
        self.position += FRAME
        pos = self.position
        utt = self.utterance
        actions: list[Action] = []
        if utt is None:
            if prob >= cfg.threshold:
                pre = max(self._last_end, frame_start - cfg.pre_pad_ms * self._ms)
                utt = self.utterance = Utterance(
                    self.next_index, frame_start, pos, pre, probs=[prob], probs_from=frame_start
                )
                self.next_index += 1
                utt.voiced_since_interim = FRAME
                actions.append(Action(ActionKind.SPEECH_STARTED, utt.index, pos, start=frame_start, end=pos))
            return actions
        utt.probs.append(prob)
        voiced = prob >= (cfg.neg_threshold if utt.speaking else cfg.threshold)
        if voiced:
            if not utt.speaking:
                utt.speaking = True
                if utt.candidate is not None and utt.candidate.emitted:
                    actions.append(Action(ActionKind.RETRACT, utt.index, pos, start=utt.start, end=utt.end))
                utt.candidate = None  # an in-flight decode for it is now stale
            utt.end = pos
            utt.voiced_since_interim += FRAME
            if cfg.interim and utt.voiced_since_interim >= cfg.interim_interval_ms * self._ms:
                utt.voiced_since_interim = 0
                actions.append(self._decode(ActionKind.DECODE_INTERIM, utt, pos, window_end=pos))
            if pos - utt.decode_from >= cfg.max_window_s * SAMPLE_RATE:
                actions.append(self._commit(utt, pos))
            return actions
        utt.speaking = False
        silence = pos - utt.end
        # To the nearest 32 ms frame: silence grows a frame at a time, so ">= candidate_ms" alone
        # would start a 100 ms candidate at 128 ms. Speculative only (a FINAL still needs its full
        # endpoint), so starting it 32 ms sooner costs at most a retracted candidate.
        if utt.candidate is None and silence + FRAME // 2 >= cfg.candidate_ms * self._ms:
            utt.candidate = _Candidate(self._next_candidate_id, utt.end)
            self._next_candidate_id += 1
            window_end = min(pos, utt.end + cfg.post_pad_ms * self._ms)
            actions.append(self._decode(ActionKind.DECODE_CANDIDATE, utt, pos, window_end, utt.candidate.id))
        actions.extend(self._maybe_final())
        return actions

    def on_candidate(self, candidate_id: int, text: str) -> list[Action]:
        """The speculative decode `candidate_id` finished with `text` (stale ids are ignored)."""
        utt = self.utterance
        if utt is None or utt.candidate is None or utt.candidate.id != candidate_id:
            return []
        utt.candidate.text = text
        actions: list[Action] = []
        if text:
            utt.candidate.emitted = True
            actions.append(Action(ActionKind.CANDIDATE, utt.index, self.position, utt.start, utt.end, text=text))
        actions.extend(self._maybe_final())
        return actions

    def on_hint(self, text: str, probability: float) -> list[Action]:
        """The client's end-of-turn probability for `text`; kept for a candidate with that text."""
        self._hint = (text.strip(), probability)
        utt = self.utterance
        if utt is None or utt.candidate is None or utt.candidate.text is None:
            return []
        return self._maybe_final()

    def _hint_for(self, text: str) -> float | None:
        if self._hint is not None and self._hint[0] == text.strip():
            return self._hint[1]
        return None

    def endpoint_for(self, text: str, hint: float | None = None) -> int:
        """The silence (ms) that ends an utterance whose candidate text is `text`."""
        cfg = self.config
        if not cfg.hints:
            return cfg.min_endpoint_ms if looks_complete(text) else cfg.endpoint_ms
        if not text.strip():
            return cfg.min_endpoint_ms
        if hint is not None and hint < cfg.hint_unfinished:
            longest = max(cfg.endpoint_ms, cfg.max_endpoint_ms)
            return round(longest - hint / cfg.hint_unfinished * (longest - cfg.endpoint_ms))
        if hint is None or trails_off(text) or hint < cfg.hint_low:
            return cfg.endpoint_ms
        sure = cfg.hint_high if text.rstrip().endswith((".", "?", "!")) else cfg.hint_sure
        if hint >= sure:
            return cfg.hinted_endpoint_ms
        likely = max(cfg.min_endpoint_ms, min(cfg.likely_endpoint_ms, cfg.endpoint_ms))
        return round(cfg.min_endpoint_ms + (sure - hint) / (sure - cfg.hint_low) * (likely - cfg.min_endpoint_ms))

    def _maybe_final(self) -> list[Action]:
        utt = self.utterance
        if utt is None or utt.speaking or utt.candidate is None or utt.candidate.text is None:
            return []
        endpoint_ms = self.endpoint_for(utt.candidate.text, self._hint_for(utt.candidate.text))
        if self.position - utt.end < endpoint_ms * self._ms:
            return []
        final = Action(
            ActionKind.FINAL,
            utt.index,
            self.position,
            utt.start,
            utt.end,
            text=utt.candidate.text,
            candidate_id=utt.candidate.id,
            endpoint_ms=endpoint_ms,
        )
        self._close()
        return [final]

    def finish(self) -> Utterance | None:
        """End of stream: the utterance in progress (the caller decodes and finalizes it), if any."""
        utt = self.utterance
        if utt is not None:
            self._close()
        return utt

    def _close(self) -> None:
        assert self.utterance is not None
        self._last_end = self.utterance.end
        self.utterance = None

    def _decode(self, kind: ActionKind, utt: Utterance, pos: int, window_end: int, candidate_id: int = 0) -> Action:
        return Action(
            kind, utt.index, pos, start=utt.decode_from, end=window_end, candidate_id=candidate_id, speech_end=utt.end
        )

    def _commit(self, utt: Utterance, pos: int) -> Action:
        """Close the first part of a long utterance at its deepest pause in the second half of the window."""
        probs = utt.probs
        lo, hi = len(probs) // 2, max(len(probs) // 2 + 1, len(probs) - 3)
        best, best_len, run_start = lo, 0, -1
        for i in range(lo, min(hi, len(probs))):  # middle of the longest run of sub-threshold frames
            if probs[i] < self.config.neg_threshold:
                run_start = i if run_start < 0 else run_start
                if i - run_start + 1 > best_len:
                    best_len, best = i - run_start + 1, (run_start + i) // 2
            else:
                run_start = -1
        if best_len == 0 and hi > lo:  # no pause at all: the least voiced frame
            best = min(range(lo, min(hi, len(probs))), key=lambda k: probs[k])
        split = min(max(utt.probs_from + best * FRAME, utt.decode_from + FRAME), pos)
        action = Action(ActionKind.DECODE_COMMIT, utt.index, pos, start=utt.decode_from, end=split, speech_end=utt.end)
        utt.probs = probs[(split - utt.probs_from) // FRAME :]
        utt.probs_from = split
        utt.decode_from = split
        return action
