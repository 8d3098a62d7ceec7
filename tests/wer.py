"""Word error rate for tests (shared): wer(reference, hypothesis) after light normalization."""

from __future__ import annotations

import re

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve", "15": "fifteen", "20": "twenty",
    "30": "thirty",
}  # fmt: skip


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; small numerals spelled out ("10" -> "ten")."""
    words = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return [_NUMBERS.get(w, w) for w in words]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 = perfect; an empty reference gives 0 or 1)."""
    errors, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if not normalize(hypothesis) else 1.0
    return errors / n
