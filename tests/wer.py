"""Word error rate for tests (shared): wer(reference, hypothesis) after light normalization.

One implementation for the whole repo: the benchmark's (bench/stats.py), which spells digits out
(0-999) so "10" matches "ten" and drops punctuation and case.
"""

from __future__ import annotations

from bench.stats import edit_distance, normalize_words


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count)."""
    ref = normalize_words(reference)
    return edit_distance(ref, normalize_words(hypothesis)), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 = perfect; an empty reference gives 0 or 1)."""
    errors, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if not normalize_words(hypothesis) else 1.0
    return errors / n
