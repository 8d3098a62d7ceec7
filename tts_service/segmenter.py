"""Incremental sentence segmenter for text that arrives in fragments (LLM tokens).

A sentence is complete when its terminator (. ! ? … plus closing quotes/brackets) is followed
by whitespace and then more text, at a newline, or at end of input. Every decision depends
only on the text up to the first non-space character after the candidate boundary, so the
segments are the same however the text was cut into fragments.

Not boundaries: abbreviations (Dr. Mr. e.g. i.e. ...), "etc."/"U.S."/"a.m." unless the next
word is capitalised, initials ("J. Smith"), decimals and dotted names (3.14, example.com),
list numbers ("1. First"), an ellipsis followed by a lower-case word, and a "." followed by a
lower-case word. To speak sooner, the first segment may end at a comma/semicolon/colon once
`first_clause_chars` characters precede it, or (with `first_phrase_words`) at the space after
that many words when the last one does not announce more (not "the", "of", "is"...) and two
more words of the sentence follow (decided once they are complete): a short first phrase is
synthesized while the rest of a longer sentence is still being generated. Later
segments end at sentences (or a clause mark past `long_clause_chars`); any segment is cut at a
space after `max_chars` characters.

A reply that opens with an interjection ("Sure,", "Okay!", "Yes.", "Of course,") speaks it as its
own segment at once, as a person does (with `first_phrase_words`: the comma after it ends the
segment too), and the first-phrase rule then applies to the segment after it: the opener is
audible ~3 tokens into the reply, and the words after it follow as a short phrase, not a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINATORS = ".!?…"
CLOSERS = "\"'”’)]}»*_`"
CLAUSE_MARKS = ",;:"

# Never end a sentence after these (lower-cased, without the final ".").
NEVER_END = {
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
    "st",
    "mt",
    "e.g",
    "i.e",
    "eg",
    "ie",
    "vs",
    "cf",
    "fig",
    "approx",
    "gen",
    "sen",
    "rep",
    "gov",
    "capt",
    "lt",
    "col",
    "sgt",
    "no",
    "vol",
    "ch",
    "pp",
    "ca",
}
# End a sentence after these only when the next word starts with a capital letter or digit.
MAYBE_END = {"etc", "u.s", "u.k", "u.s.a", "a.m", "p.m", "inc", "ltd", "jr", "sr", "co", "corp", "dept", "est"}


@dataclass(frozen=True)
class Segment:
    """A sentence (or clause) and its [start, end) character offsets in all text received."""

    text: str
    start: int
    end: int
    index: int
    # Cut mid-sentence at a space (the first phrase, or max_chars): the sentence goes on, so the
    # voice keeps only a short breath of the pause after it (see LoadedVoice.synthesize).
    continues: bool = False


# The first phrase never ends on these (the next word belongs to them).
CLINGING_WORDS = frozenset(
    """
    a an the this that these those my your his her its our their some any no every each
    and or but nor so if because than as while when where who which whose what how
    of to in on at by for from with about into onto over under after before between through
    is are was were be been am being will would can could should shall may might must do does did
    has have had not very too just also i you he she it we they it's i'm you're there's here's let's
    """.split()
)


# Interjections a reply may open with, spoken as their own segment (lower case, no punctuation).
OPENERS = frozenset(
    (
        *"sure okay ok yes yeah yep no nope well right alright hmm oh ah great sorry certainly".split(),
        *"absolutely definitely indeed hi hello hey thanks".split(),
        *("of course", "thank you", "all right", "got it", "sounds good", "no problem"),
        *("good question", "great question"),
    )
)
MAX_OPENERS = 2  # "Well, well, well, ..." : the third is an ordinary first phrase

# Spoken numbers: the first phrase never ends between two of them ("three | hundred").
NUMBER_WORDS = frozenset(
    """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million billion trillion point
    """.split()
)


def _is_number(word: str) -> bool:
    bare = word.strip("\"'“”‘’()").lower()
    return bare in NUMBER_WORDS or bare.replace(",", "").replace(".", "").isdigit()


def _number_follows(words: list[str]) -> bool:
    """The next words go on with a number: "hundred ...", or "and forty ..."."""
    if words[:1] == ["and"]:
        return len(words) > 1 and _is_number(words[1])
    return bool(words) and _is_number(words[0])


def is_opener(text: str) -> bool:
    """An interjection such as "Sure," or "Of course!" (its punctuation ignored)."""
    return text.strip().rstrip(TERMINATORS + CLOSERS + CLAUSE_MARKS).strip().lower() in OPENERS


class SentenceSegmenter:
    def __init__(
        self,
        first_clause_chars: int = 20,
        long_clause_chars: int = 150,
        max_chars: int = 300,
        first_phrase_words: int = 0,
    ) -> None:
        self.first_phrase_words = first_phrase_words
        self.first_clause_chars = first_clause_chars
        self.long_clause_chars = long_clause_chars
        self.max_chars = max_chars
        self._buf = ""
        self._base = 0  # offset of _buf[0] in all text received
        self._scan = 0  # _buf[:_scan] holds no boundary
        self._index = 0
        self._openers = 0  # segments so far that were all openers ("Sure,"): the first phrase is still ahead
        self.total_chars = 0

    def push(self, fragment: str) -> list[Segment]:
        """Add text; return the segments it completed."""
        self._buf += fragment
        self.total_chars += len(fragment)
        return self._drain(final=False)

    def finish(self) -> list[Segment]:
        """End of input: return the remaining text as segments."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Segment]:
        out: list[Segment] = []
        while True:
            self._skip_leading_space()
            if not self._buf:
                return out
            cut = self._find_boundary(final)
            if cut is None:
                if final:
                    cut = (len(self._buf), len(self._buf), False)
                else:
                    return out
            end, next_start, continues = cut
            text = self._buf[:end].rstrip()
            if text:
                out.append(Segment(text, self._base, self._base + len(text), self._index, continues))
                if self._may_open_with(text):
                    self._openers += 1
                self._index += 1
            self._buf = self._buf[next_start:]
            self._base += next_start
            self._scan = 0

    def _skip_leading_space(self) -> None:
        stripped = self._buf.lstrip()
        self._base += len(self._buf) - len(stripped)
        self._buf = stripped

    def _find_boundary(self, final: bool) -> tuple[int, int, bool] | None:
        """(end of segment, start of the rest, cut mid-sentence) of the first boundary, None if none decided yet."""
        buf, n = self._buf, len(self._buf)
        phrase_ahead = self._phrase_ahead
        clause_limit = self.first_clause_chars if phrase_ahead else self.long_clause_chars
        i = self._scan
        while i < n:
            c = buf[i]
            if c == "\n":
                return i, i + 1, False
            if c in TERMINATORS:
                j = i
                while j < n and buf[j] in TERMINATORS:
                    j += 1
                while j < n and buf[j] in CLOSERS:
                    j += 1
                decided = self._after_terminator(i, j, final)
                if decided is None:
                    self._scan = i
                    return None
                if decided >= 0:
                    return j, decided, False
                i = j
                continue
            if c in CLAUSE_MARKS and (i >= clause_limit or self._may_open_with(buf[:i])):
                k = self._next_nonspace(i + 1)
                if k == i + 1 and i + 1 < n:  # no space after: "1,000", "3:30"
                    i += 1
                    continue
                if k >= n:
                    if final:
                        return None
                    self._scan = i
                    return None
                return i + 1, k, False
            if phrase_ahead and self.first_phrase_words and c.isspace() and i and buf[i - 1].isalnum():
                decided = self._phrase_ends_at(i, final)
                if decided is None:
                    self._scan = i
                    return None
                if decided:
                    return i, self._next_nonspace(i + 1), True
            if i >= self.max_chars and c.isspace() and not buf[i - 1].isspace():
                if buf[i - 1] not in TERMINATORS + CLOSERS + CLAUSE_MARKS:
                    return i, i + 1, True
            i += 1
        self._scan = n
        return None

    def _may_open_with(self, text: str) -> bool:
        """`text` is an opener spoken alone before the first phrase ("Sure," with first phrases on)."""
        return bool(self.first_phrase_words) and self._phrase_ahead and self._openers < MAX_OPENERS and is_opener(text)

    @property
    def _phrase_ahead(self) -> bool:
        """No segment yet, or only openers: the next one may be a short first phrase."""
        return self._index == self._openers

    def _phrase_ends_at(self, i: int, final: bool) -> bool | None:
        """The first phrase may end at the space `i`: enough words before it, the last one not clinging,
        and at least two more words of the same sentence after it (so "today." is never left alone);
        None while those two words are not complete yet."""
        words = self._buf[:i].split()
        if len(words) < self.first_phrase_words or words[-1].lower().strip("\"'“”‘’()") in CLINGING_WORDS:
            return False
        rest = self._buf[i:]
        following = rest.split()
        complete = following if rest[-1:].isspace() else following[:-1]
        if any(w[-1] in TERMINATORS + CLOSERS + CLAUSE_MARKS or "\n" in w for w in complete[:2]):
            return False
        if _is_number(words[-1]) and _number_follows(complete):
            return False  # "three | hundred thousand", "one hundred | and four" would be read as two numbers
        if len(complete) < 2:
            return False if final else None
        return True

    def _next_nonspace(self, k: int) -> int:
        while k < len(self._buf) and self._buf[k].isspace():
            k += 1
        return k

    def _after_terminator(self, i: int, j: int, final: bool) -> int | None:
        """Start of the next segment if buf[i:j] ends a sentence, -1 if it does not, None if undecided."""
        buf, n = self._buf, len(self._buf)
        if j >= n:
            return None if not final else -1  # at end of input the rest is flushed anyway
        if not buf[j].isspace():
            return -1  # 3.14, example.com, e.g
        k = self._next_nonspace(j)
        if k >= n:
            return None if not final else -1
        if "\n" in buf[j:k]:
            return k
        run = buf[i:j].rstrip(CLOSERS)
        nxt = buf[k]
        upper_next = nxt.isupper() or nxt.isdigit() or nxt in "\"'“‘([*#"
        if run in ("!", "?") or (len(run) > 1 and not set(run) <= {"."} and "…" not in run):
            return k  # !, ?, ?!, !!
        if run in ("...", "…") or len(run) > 1:  # ellipsis: ends only before a capital
            return k if upper_next else -1
        # a single "."
        w = i
        while w > 0 and not buf[w - 1].isspace() and buf[w - 1] not in "\"'“‘([":
            w -= 1
        word = buf[w:i]
        lower = word.lower()
        if lower in NEVER_END:
            return -1
        if lower in MAYBE_END:
            return k if upper_next else -1
        if len(word) == 1 and word.isalpha() and word.isupper():
            return -1  # initial: "J. Smith"
        if word.isdigit() and len(word) <= 3 and buf[:w].strip() == "":
            return -1  # list number at the start of a segment: "1. First"
        if not upper_next:
            return -1  # ". and" — probably an abbreviation we don't know
        return k


def split_sentences(text: str, **kwargs: int) -> list[Segment]:
    """All segments of a complete text."""
    seg = SentenceSegmenter(**kwargs)
    return seg.push(text) + seg.finish()
