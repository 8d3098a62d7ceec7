"""End-of-turn score from the resident LLM (no gRPC, no model state): the idea of LiveKit's turn
detector with an untuned chat model.

After the user's words (rendered as the start of a user message), the next-token distribution says
whether the message ends here: the end-of-message token (`<|im_end|>`) or sentence-final
punctuation. Transcribers add or omit the final "." / "?" at will (tiny.en writes none on many
imperatives), so the words are scored WITHOUT their trailing terminal punctuation and the score is
P(end-of-message) + P(a sentence-final punctuation token): "Turn on the lights in the living room"
scores high ('.' is likely), "What is the capital of" and "The numbers are one, two, three" score
near 0 (a noun / ',' is likely).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from llm_service.engine import common_prefix

# Trailing characters removed before scoring (sentence-final marks and spaces; not "," or "...").
TERMINAL_MARKS = ".?!"
# A token counts as "the sentence ends here" when its text, stripped of white space, is made of
# these marks only ("." "?" "!" ".\n" "?!" ...), and is not an ellipsis (trailing off).
_ENDING_CHARS = set(".?!")


def scoring_text(text: str) -> str:
    """`text` without trailing white space and single sentence-final marks ("..." and "," are kept)."""
    stripped = text.rstrip()
    if stripped.endswith(("...", "…")):
        return stripped
    core = stripped.rstrip(TERMINAL_MARKS).rstrip()
    return core or stripped


def is_ending_piece(piece: str) -> bool:
    core = piece.strip()
    return bool(core) and set(core) <= _ENDING_CHARS and ".." not in core


def ending_token_ids(pieces: Iterable[tuple[int, str]]) -> list[int]:
    """Ids of the vocabulary pieces that end a sentence (see `is_ending_piece`)."""
    return [token for token, piece in pieces if is_ending_piece(piece)]


def end_probability(logits: np.ndarray, end_ids: Sequence[int]) -> float:
    """Softmax mass of `end_ids` in one row of logits."""
    row = np.asarray(logits, dtype=np.float64)
    row = row - row.max()
    weights = np.exp(row)
    return float(weights[list(end_ids)].sum() / weights.sum()) if len(end_ids) else 0.0


def words_boundary(with_and: Sequence[int], with_or: Sequence[int]) -> int:
    """Where the user's words end in a tokenized prompt: the common prefix of the prompt rendered
    with the words + " and" and with the words + " or" (the two differ right after the words)."""
    return common_prefix(with_and, with_or)
