"""Text → what a voice should say: no emoji, no markdown, numbers/currency/dates as words.

Pure Python. `clean_text(text)` is applied to each sentence before synthesis; it never raises
on odd input (control characters, mixed scripts) and returns "" when nothing is speakable.
Rules are applied in order (markdown → links/URLs/e-mails → abbreviations → dates/times/
currency/percent/ordinals/ranges/numbers → symbols → emoji and scripts the voice can't say).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from tts_service import numbers

_D = "[0-9]"  # never \d: it matches digits of every script
_NUM = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?"

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_ABBREV = {m[:3].lower(): m for m in _MONTHS} | {"sept": "September"}
_MONTH_RE = r"(January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"

_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}
_SCALE_WORDS = {"k": "thousand", "m": "million", "bn": "billion", "b": "billion"}

# Abbreviations spoken as words (case-sensitive where the lower-case form is a real word).
_ABBREVIATIONS: list[tuple[str, str]] = [
    (r"\be\.\s?g\.(?=\W|$)", "for example"),
    (r"\bi\.\s?e\.(?=\W|$)", "that is"),
    (r"\betc\.(?=\W|$)", "et cetera"),
    (r"\betc\b", "et cetera"),
    (r"\bvs\.?(?=\s)", "versus"),
    (r"\bDr\.(?=\s)", "Doctor"),
    (r"\bMr\.(?=\s)", "Mister"),
    (r"\bMrs\.(?=\s)", "Missus"),
    (r"\bMs\.(?=\s)", "Miz"),
    (r"\bProf\.(?=\s)", "Professor"),
    (r"\bJr\.(?=\W|$)", "Junior"),
    (r"\bSr\.(?=\W|$)", "Senior"),
    (r"\bapprox\.(?=\s)", "approximately"),
    (r"\b[Nn]o\.\s?(?=[0-9])", "number "),
    (r"\bU\.S\.A\.(?=\W|$)", "U S A"),
    (r"\bU\.S\.(?=\W|$)", "U S"),
    (r"\bU\.K\.(?=\W|$)", "U K"),
    (r"\b[Aa]\.[Mm]\.(?=\W|$)", "A M"),
    (r"\b[Pp]\.[Mm]\.(?=\W|$)", "P M"),
    (r"#\s?(?=[0-9])", "number "),
    (r"~\s?(?=[0-9])", "about "),
]

_SYMBOLS: list[tuple[str, str]] = [
    (r"\s*&\s*", " and "),
    (r"\s*\+\s*", " plus "),
    (r"\s*=\s*", " equals "),
    (r"\s*×\s*", " times "),
    (r"\s*±\s*", " plus or minus "),
    (r"\s*@\s*", " at "),
    (r"%", " percent "),
    (r"°", " degrees "),
    (r"§", " section "),
    (r"\s*(?:->|=>|→|←|⇒)\s*", ", "),
    (r"\s*\|\s*", ", "),
    (r"[/\\⁄]", " "),
    (r"[#~^<>{}\[\]*_`$€£¥₹]", " "),
    (r"[“”„«»\"]", ""),
    (r"[‘’`´]", "'"),
    (r"[–—]", ", "),
]

_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>()\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")
_DOMAIN = re.compile(
    r"\b((?:[A-Za-z0-9-]+\.)+(?:com|org|net|io|dev|ai|edu|gov|co|uk|de|fr|app|info|me|us))\b(?![.@]?[A-Za-z0-9])",
    re.IGNORECASE,
)


def _speak_host(host: str) -> str:
    host = host.split("@")[-1].split(":")[0].strip(".").lower()
    if host.startswith("www."):
        host = host[4:]
    parts = [p for p in host.split(".") if p]
    if not parts or not all(re.fullmatch(r"[a-z0-9-]+", p) for p in parts):
        return "a link"
    return " dot ".join(parts)


def _url(match: re.Match[str]) -> str:
    url = match.group(0)
    trailing = ""
    while url and url[-1] in ".,;:!?)]'\"":
        trailing = url[-1] + trailing
        url = url[:-1]
    host = re.sub(r"^(?:[a-z]+://)", "", url, flags=re.IGNORECASE).split("/")[0].split("?")[0].split("#")[0]
    return _speak_host(host) + trailing


def _email(match: re.Match[str]) -> str:
    user = re.sub(r"[._%+-]+", " ", match.group(1)).strip()
    return f"{user} at {_speak_host(match.group(2))}"


def _number(text: str) -> str:
    """A plain number as words: years for 1100-2099, digit by digit for leading zeros / huge."""
    text = text.replace(",", "")
    whole, _, frac = text.partition(".")
    if frac:
        return numbers.decimal(text)
    if len(whole) > 1 and whole.startswith("0"):
        return numbers.digits_to_words(whole)
    value = int(whole)
    if len(whole) == 4 and 1100 <= value <= 2099 and "," not in text:
        return numbers.year(value)
    return numbers.cardinal(value)


def _currency(symbol: str, amount: str, scale: str | None) -> str:
    one, many, sub_one, sub_many = _CURRENCY[symbol]
    amount = amount.replace(",", "")
    if scale:
        scale_word = _SCALE_WORDS.get(scale.lower(), scale.lower())
        return f"{numbers.decimal(amount)} {scale_word} {many}"
    whole, _, frac = amount.partition(".")
    units = int(whole) if whole else 0
    if frac and (len(frac) != 2 or not sub_one):
        return f"{numbers.decimal(amount)} {many}"
    cents = int(frac) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{numbers.cardinal(units)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{numbers.cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _currency_prefix(m: re.Match[str]) -> str:
    return " " + _currency(m.group(1), m.group(2), m.group(3)) + " "


def _currency_suffix(m: re.Match[str]) -> str:
    return " " + _currency(m.group(3), m.group(1), m.group(2)) + " "


def _month(name: str) -> str:
    return _MONTH_ABBREV.get(name.lower()[:4] if name.lower().startswith("sept") else name.lower()[:3], name)


def _date_iso(m: re.Match[str]) -> str:
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {numbers.ordinal(d)}, {numbers.year(y)}"


def _date_us(m: re.Match[str]) -> str:
    mo, d, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {numbers.ordinal(d)}, {numbers.year(y)}"


def _spoken_date(m: re.Match[str], day_group: int, month_group: int, day_first: bool) -> str:
    """'March 3rd, 2024' or 'the 3rd of March, 2024'; the match unchanged when the day cannot be one."""
    day = int(m.group(day_group))
    if not 1 <= day <= 31:
        return m.group(0)
    month, ordinal = _month(m.group(month_group)), numbers.ordinal(day)
    out = f"the {ordinal} of {month}" if day_first else f"{month} {ordinal}"
    return out + (f", {numbers.year(int(m.group(3)))}" if m.group(3) else "")


def _date_month_day(m: re.Match[str]) -> str:
    return _spoken_date(m, 2, 1, day_first=False)


def _date_day_month(m: re.Match[str]) -> str:
    return _spoken_date(m, 1, 2, day_first=True)


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    suffix = m.group(3)
    if hour > 23 or minute > 59:
        return m.group(0)
    words = numbers.cardinal(hour)
    if minute == 0:
        words += "" if suffix else " hundred" if hour > 12 or m.group(1).startswith("0") else " o'clock"
    elif minute < 10:
        words += f" oh {numbers.cardinal(minute)}"
    else:
        words += f" {numbers.cardinal(minute)}"
    if suffix:
        words += f" {suffix[0].upper()} M"
    return words


def _hour_ampm(m: re.Match[str]) -> str:
    return f"{numbers.cardinal(int(m.group(1)))} {m.group(2).upper()} M"


def _range(m: re.Match[str]) -> str:
    return f"{_number(m.group(1))} to {_number(m.group(2))}"


def _temperature(m: re.Match[str]) -> str:
    unit = {"c": "Celsius", "f": "Fahrenheit", "k": "Kelvin"}[m.group(2).lower()]
    return f"{numbers.decimal(m.group(1))} degrees {unit}"


def _percent(m: re.Match[str]) -> str:
    return f"{numbers.decimal(m.group(1))} percent"


def _ordinal(m: re.Match[str]) -> str:
    return numbers.ordinal(int(m.group(1)))


def _negative(m: re.Match[str]) -> str:
    return f"minus {_number(m.group(1))}"


def _plain_number(m: re.Match[str]) -> str:
    return f" {_number(m.group(0))} "


Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _rules(pairs: Sequence[tuple[str, str | Callable[[re.Match[str]], str]]], flags: int = 0) -> list[Rule]:
    return [(re.compile(p, flags), r) for p, r in pairs]


_MARKDOWN = _rules(
    [
        (r"^\s*```[^\n]*$", ""),  # code fences
        (r"^\s{0,3}#{1,6}\s+", ""),  # headings
        (r"\s+#+\s*$", ""),  # closing hashes of headings
        (r"^\s*>\s?", ""),  # block quotes
        (r"^\s*(?:[-*_]\s*){3,}$", ""),  # horizontal rules
        (r"^\s*[-*+•◦▪‣]\s+", ""),  # bullets
        (r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$", ""),  # table separator rows
        (r"!?\[([^\]\n]*)\]\([^)\n]*\)", r"\1"),  # links and images → their text
        (r"</?[A-Za-z][^>\n]*>", " "),  # HTML tags
        (r"\*{1,3}|~~|`+", ""),  # bold / italic / strike / code markers
        (r"(?<![A-Za-z0-9])_{1,3}(?=\S)|(?<=\S)_{1,3}(?![A-Za-z0-9])", ""),  # _italic_ / __bold__
    ],
    re.MULTILINE,
)

_NUMBERS = _rules(
    [
        # dates
        (rf"\b({_D}{{4}})-({_D}{{1,2}})-({_D}{{1,2}})\b", _date_iso),
        (rf"\b({_D}{{1,2}})/({_D}{{1,2}})/({_D}{{4}})\b", _date_us),
        (rf"\b{_MONTH_RE}\s+({_D}{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+({_D}{{4}})\b)?", _date_month_day),
        (rf"\b({_D}{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_RE}(?:,?\s+({_D}{{4}})\b)?", _date_day_month),
        # times
        (rf"\b({_D}{{1,2}}):({_D}{{2}})(?::{_D}{{2}})?(?:\s*([AaPp])\.?[Mm]\.?(?![A-Za-z]))?", _time),
        (rf"\b({_D}{{1,2}})\s*([AaPp])\.?[Mm]\b\.?", _hour_ampm),
        # temperature, currency, percent
        (rf"(-?{_D}+(?:\.{_D}+)?)\s?°\s?([CFK])\b", _temperature),
        (rf"([$€£¥₹])\s?({_NUM})(?:\s?(thousand|million|billion|trillion|bn|[kKmMbB])\b)?", _currency_prefix),
        (rf"({_NUM})(?:\s?(thousand|million|billion|trillion))?\s?([$€£¥₹])", _currency_suffix),
        (rf"(-?{_NUM})\s?%", _percent),
        # versions (1.2.3), ordinals, ranges, negatives, plain numbers
        (rf"\b{_D}+(?:\.{_D}+){{2,}}\b", lambda m: " point ".join(_number(p) for p in m.group(0).split("."))),
        (rf"\b({_D}+)(?:st|nd|rd|th)\b", _ordinal),
        (rf"(?<![0-9.,])({_NUM})\s?[-–—]\s?({_NUM})(?![0-9])", _range),
        (rf"(?:(?<=^)|(?<=[\s(]))[-−]({_NUM})", _negative),
        (_NUM, _plain_number),
    ]
)

_ABBREV = _rules(_ABBREVIATIONS)
_SYMBOL_RULES = _rules(_SYMBOLS)
_EMOJI_EXTRA = re.compile("[\ufe00-\ufe0f\u200d\u20e3\U000e0000-\U000e007f]")


def _apply(rules: list[Rule], text: str) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


def _drop_unspeakable(text: str, latin_only: bool) -> str:
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "C" or cat in ("So", "Sk", "Sm", "Sc"):  # control, format, emoji, other symbols
            out.append(" ")
        elif latin_only and cat[0] in "LM" and not ch.isascii() and "LATIN" not in unicodedata.name(ch, ""):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def clean_text(text: str, language: str = "en") -> str:
    """What the voice should say for `text` ("" if nothing speakable).

    `language` is the voice's language code ("en_US" → English rules). For non-English
    voices only markdown/emoji/control-character cleaning is applied; numbers are left to
    the voice's own phonemizer.
    """
    english = language.lower().startswith("en")
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\x00", " ").replace("\r", "\n").replace("…", "...")
    text = _EMOJI_EXTRA.sub("", text)
    text = _apply(_MARKDOWN, text)
    text = _URL.sub(_url, text)
    text = _EMAIL.sub(_email, text)
    if english:
        text = _DOMAIN.sub(lambda m: _speak_host(m.group(1)), text)
        text = _apply(_ABBREV, text)
        text = _apply(_NUMBERS, text)
    text = _apply(_SYMBOL_RULES, text) if english else re.sub(r"[*_`#\[\]{}<>|~^]", " ", text)
    text = _drop_unspeakable(text, latin_only=english)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"([(])\s+", r"\1", text)
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"^[\s,.;:!?)]+", "", text).strip()
    if not any(ch.isalnum() for ch in text):
        return ""
    return text
