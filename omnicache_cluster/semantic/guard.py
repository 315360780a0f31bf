"""The lexical guard and the conversation-context hash of the semantic caches.

Embeddings place "cancel my order" and "don't cancel my order" next to each other,
and "open on Saturday" next to "open on Sunday". The guard compares the words that
carry such differences, which embeddings blur:

* **negation**: the parity of negators (``not``, ``n't``, ``never``, ``no``,
  ``without``, ``non-``, ``stop``/``avoid`` + gerund...) must match, and neither
  side may take one pole of a polar group (include/exclude, allow/ban,
  accept/decline/reject, benefit/drawback, optional/compulsory, opt in/opt out...,
  compared by stem) while the other takes the other pole, nor use ``unX`` /
  ``inX`` / ``disX``... where the other says ``X``. Two flips cancel ("not
  mandatory" / "optional"); "No," opening an answer and "or not?" are no negation.
  In a long text only a word negated on one side and affirmed on the other counts;
* **numbers**: digits and number words (``fifteen`` = 15, ``five-bedroom``) must
  be the same sets; a spelled number that a paraphrase drops ("two essential
  parts") is allowed, a digit is not; list markers ("1)") and versions ("v2.1") are
  read as such;
* **dates and times**: weekdays, months, relative days and the part of the day
  (``7pm`` = ``seven this evening``) must be the same sets; "may" and "march" are
  months only when capitalised inside a sentence or next to a number;
* **positions**: first / second / last / next... must agree when both name one;
* **named entities**: a capitalised word that does not open a sentence, an acronym
  or a word with inner capitals or digits in either text must occur in the other,
  allowing an acronym of the other's words (NLP / natural language processing),
  CamelCase capitals (JS / JavaScript), a plural, a derived word (Pythonic) and
  a dotted name;
* **possessives**: ``my colleague's password`` is not ``my password``;
* **direction**: the phrases around ``to`` / ``from`` / ``into`` / ``than`` must
  not change places ("from savings to current" / "from current to savings").

The ``"strict"`` guard also refuses minimal pairs: the same words but for one short
span with another content word ("checked" / "hand" luggage, "my child" / "I").

A candidate that disagrees on any of them is a miss, whatever its similarity. The
rules are deliberately simple and explainable: they reject some true paraphrases
("14 days" / "two weeks"), which costs a hit, never a wrong answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from omnicache_cluster.core.keys import digest

__all__ = ["LexicalFeatures", "chat_context", "context_hash", "lexical_features", "lexical_match"]

_CONTRACTIONS = {
    "won't": ("will", "not"),
    "can't": ("can", "not"),
    "cannot": ("can", "not"),
    "shan't": ("shall", "not"),
    "ain't": ("is", "not"),
}
_NT_BASES = {
    "do", "does", "did", "is", "are", "was", "were", "has", "have", "had", "could", "would",
    "should", "must", "need", "ca", "wo",
}  # fmt: skip
# "... or not?", "why not?", "if not,": a question of whether, not a negation.
_WHETHER = {"or", "why", "if"}
_CLITICS = {"'m": "am", "'re": "are", "'ve": "have", "'ll": "will", "'d": "would"}
_APOS_S = {
    "what's", "it's", "that's", "there's", "here's", "who's", "where's", "how's", "let's",
    "he's", "she's", "when's", "why's", "which's", "one's",
}  # fmt: skip
_NEGATORS = {
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor",
    "absence", "absent", "lack", "lacks", "lacking", "non",
}  # fmt: skip
# Words that open a message as an answer ("No, it doesn't") or a filler: no features.
# Verbs that negate the gerund after them.
_STOPPERS = {"stop", "avoid", "quit", "cease", "stopped", "avoided"}
_INTERJECTIONS = {"no", "yes", "yeah", "yep", "nope", "ok", "okay", "well", "right", "sure"}
# Polar groups: a word of one pole on one side and of the other pole on the other side
# (and neither side naming both) is a negation. Compared by stem (see `_stem`).
_POLAR_WORDS: list[tuple[str, str]] = [
    ("lock", "unlock"), ("open", "closed close shut"), ("on", "off"),
    ("enable activate", "disable deactivate"), ("include cover", "exclude"),
    ("allow allowed permit permitted legal lawful lawfully",
     "ban forbid forbidden prohibit illegal unlawful"),
    ("safe suitable", "unsafe unsuitable dangerous"), ("upgrade", "downgrade"),
    ("pause", "resume"), ("start begin", "stop end finish"),
    ("add deposit put_in pay_in top_up", "remove withdraw take_out"),
    ("subscribe", "unsubscribe"),
    ("increase raise more higher bigger larger", "decrease reduce lower less smaller fewer cut"),
    ("most highest", "least lowest"), ("before", "after"), ("eat take", "avoid"),
    ("accept approve approved grant pass succeed successful",
     "reject decline deny refuse revoke fail unsuccessful"),
    ("join enrol enroll", "leave withdraw quit"), ("buy purchase", "sell"),
    ("win", "lose"), ("import", "export"), ("upload", "download"), ("hide", "show"),
    ("login log_in sign_in", "logout log_out sign_out"), ("opt_in", "opt_out"),
    ("maximum max", "minimum min"), ("best", "worst"), ("cheap cheapest", "expensive dear dearest"),
    ("first earliest", "last latest final"), ("early earlier", "late later"),
    ("valid", "invalid"), ("possible", "impossible"), ("encrypt", "decrypt"),
    ("mute", "unmute"), ("block", "unblock"), ("follow", "unfollow"),
    ("install", "uninstall"), ("connect", "disconnect"), ("agree", "disagree"),
    ("like", "dislike"), ("true", "false"), ("good", "bad"),
    ("pros pro advantage benefit upside", "cons con disadvantage drawback downside"),
    ("above", "below"), ("over", "under"), ("inside", "outside"),
    ("optional", "compulsory mandatory required"), ("mild", "spicy hot"), ("quiet", "busy"),
    ("full-time", "part-time"), ("online", "offline in-store"), ("import", "export"),
    ("incoming", "outgoing"), ("inbound", "outbound"), ("arrival arrive", "departure depart"),
]  # fmt: skip
_PARTICLES = {"in": "out", "out": "in", "on": "off", "off": "on", "up": "down", "down": "up"}
_PHRASAL = {
    "opt", "log", "sign", "check", "turn", "switch", "take", "put", "pay", "top", "cash",
    "move", "lock", "plug", "clock", "zoom", "scale", "speed", "slow", "bring", "shut",
}  # fmt: skip
_NEG_PREFIXES = ("un", "non-", "non", "dis", "in", "im", "il", "ir", "de")
_UNITS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12, "half": 0.5,
    "third": 3, "fourth": 4, "fifth": 5, "tenth": 10, "twice": 2, "double": 2, "triple": 3,
}  # fmt: skip
# Positions in a sequence: compared when both texts name one.
# "one of", "the one", "no one": not the number.
_NOT_ONE = {
    "of", "another", "more", "by", "no", "which", "any", "every", "each", "some", "only",
    "can", "could", "should", "would", "will", "must", "may", "might", "is", "has", "does",
}  # fmt: skip
_POSITIONS = {
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "last": "last",
    "final": "last", "next": "next", "previous": "prev", "earlier": "prev", "prior": "prev",
}  # fmt: skip
_DATES = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "weekend", "weekday", "january", "february", "april", "june", "july",
    "august", "september", "october", "november", "december", "jan", "feb", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "today",
    "tomorrow", "yesterday", "midnight", "noon", "christmas", "easter",
}  # fmt: skip
# Also verbs or nouns: dates only when capitalised inside a sentence, or next to a number.
_AMBIGUOUS_DATES = {"may", "march", "mar", "dec"}
_DAYPARTS = {
    "am": "am", "a.m": "am", "morning": "am", "pm": "pm", "p.m": "pm", "afternoon": "pm",
    "evening": "pm", "night": "pm", "tonight": "pm",
}  # fmt: skip
# Words that open a message as a greeting or close it as thanks: no features.
_GREETINGS = {"hi", "hello", "hey", "morning", "evening", "afternoon", "thanks", "cheers", "thank"}
# Fillers dropped from the word sequence that minimal pairs are found in.
_FILLERS = {
    "um", "uh", "er", "erm", "please", "just", "hi", "hello", "hey", "thanks", "thank",
    "cheers", "quick", "question", "wondering", "yeah", "so", "actually", "really",
}  # fmt: skip
# Function words: a difference in them alone does not change what is asked.
_STOPWORDS = {
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did",
    "i", "me", "my", "we", "our", "you", "your", "it", "its", "this", "that", "these",
    "those", "to", "of", "in", "on", "at", "for", "from", "by", "with", "and", "or", "if",
    "so", "as", "can", "could", "would", "should", "will", "shall", "may", "might", "must",
    "how", "what", "what's", "which", "who", "whom", "when", "where", "why", "there", "here",
    "any", "some", "get", "got", "have", "has", "had", "please", "just", "really", "very",
    "quick", "question", "one", "about", "into", "up", "out", "way", "best", "good",
    "like", "want", "need", "know", "tell", "anyone", "someone", "thing", "things", "much",
    "many", "more", "most", "also", "too", "still", "ever", "all", "it's", "i'm", "i'd",
    "i've", "team", "hey", "hi", "then", "than", "s", "t", "d", "ll", "ve", "re",
    "whats", "um", "uh", "er", "erm", "okay", "ok", "thank", "thanks", "usually",
    "possible", "available", "able", "currently", "actually", "not", "wondering",
}  # fmt: skip
# Light verbs that paraphrases swap freely ("change" / "update" my password): a swap
# of two of them is not a minimal pair.
_LIGHT_VERBS = {
    "change", "update", "switch", "modify", "edit", "make", "submit", "send", "file",
    "filing", "submitting", "set", "create", "start", "begin", "order", "request",
    "register", "sign", "get", "obtain", "find", "apply", "need", "needed", "take", "use",
    "see", "check", "fix", "repair", "call", "phone", "contact", "reach", "come", "include",
    "receive", "give", "do", "go", "put", "say", "cost", "price", "pay", "charge", "fee",
}  # fmt: skip
# Words that mark a direction or a comparison: the order of the words around them matters.
_DIRECTIONS = {
    "to": "to", "into": "to", "onto": "to", "from": "from", "than": "than", "vs": "vs",
    "versus": "vs",
}  # fmt: skip
# Word-order rules (minimal pairs, directions) only for texts up to this many words:
# a longer text is reworded more freely, and its word order says less.
_SHORT = 16
_DETERMINERS = {
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that",
    "these", "those", "some", "any", "all", "every", "each",
}  # fmt: skip
_PERSONS = {"i", "me", "myself", "we", "us", "ourselves", "you", "yourself"}
_PREPOSITIONS = {"for", "of", "in", "on", "at", "to", "from", "with", "by", "as", "about"}
_NOT_ENTITIES = {"i", "i'm", "i'd", "i've", "i'll", "ok", "hi", "hello", "thanks", "please"}
_INITIALS_SKIP = {"of", "and", "for", "the", "&", "in", "on"}
_HASH_RE = re.compile(r"[0-9a-f]{32}")
_WORD_RE = re.compile(r"[A-Za-z0-9£$€%][\w£$€%.,'’\-]*")
_NUM_RE = re.compile(
    r"[£$€]?(\d+(?:[.,]\d+)*)(%|st|nd|rd|th|am|pm|k|m|bn|gb|mb|tb|kb|kg|km|g|mg|ml|l|h|hr|hrs"
    r"|s|x|p|yr|yrs|min|mins|ft|cm|mm|lb|lbs|mph)?(?:-[a-z]+)*"
)
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")


def _stem(word: str) -> str:
    """A crude stem: enough to compare ``included`` / ``includes`` / ``include``."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


_POLAR: list[tuple[frozenset[str], frozenset[str]]] = [
    (frozenset(_stem(w) for w in pos.split()), frozenset(_stem(w) for w in neg.split()))
    for pos, neg in _POLAR_WORDS
]
_POLAR_VOCAB = frozenset(w for pos, neg in _POLAR for w in pos | neg)


@dataclass(frozen=True)
class LexicalFeatures:
    """What the guard compares, extracted from one text."""

    negation_parity: int
    antonyms: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    entities: frozenset[str]
    possessives: frozenset[str]
    tokens: frozenset[str]
    content: frozenset[str]
    #: The words in order (lowercase, contractions expanded, fillers dropped).
    sequence: tuple[str, ...] = ()
    #: Stems of every word (and of the parts of hyphenated words).
    stems: frozenset[str] = frozenset()
    #: Whether each number came from digits (``"3"``) rather than a word (``"three"``).
    digit_numbers: frozenset[str] = frozenset()
    positions: frozenset[str] = frozenset()
    #: The text lowercased with everything but letters and digits removed.
    compact: str = ""
    #: Initials of each run of words (for acronyms), and capitals of CamelCase words.
    initials: tuple[tuple[str, str], ...] = ()
    acronyms: frozenset[str] = frozenset()
    #: Words in order, lowercase (to expand an acronym of the other text).
    words: tuple[str, ...] = ()
    #: Stems of the first content word after each negator ("not *cancel* my order").
    negated: frozenset[str] = frozenset()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _number(word: str) -> tuple[str, str | None, bool] | None:
    """Return ``(value, unit, from digits)`` of a number token, else ``None``."""
    m = _NUM_RE.fullmatch(word[1:] if word[:1] == "v" and word[1:2].isdigit() else word)
    if m:
        raw = m.group(1).rstrip(".,")
        if "," in raw and re.fullmatch(r"\d{1,3}(,\d{3})+", raw):
            raw = raw.replace(",", "")
        try:
            value = format(float(raw.replace(",", ".")), "g")
        except ValueError:
            value = raw
        return value, m.group(2), True
    head = word.split("-", 1)[0]
    unit = _UNITS.get(head)
    return None if unit is None else (format(float(unit), "g"), None, False)


def _expand(word: str) -> list[str]:
    """Split a lowercase word into the words it stands for (``can't`` -> can not)."""
    if word in _CONTRACTIONS:
        return list(_CONTRACTIONS[word])
    if word.endswith("n't"):
        return [word[:-3], "not"]
    if word.endswith("nt") and word[:-2] in _NT_BASES:  # "dont", "isnt"
        return [word[:-2], "not"]
    for clitic, full in _CLITICS.items():
        if word.endswith(clitic) and len(word) > len(clitic):
            return [word[: -len(clitic)], full]
    if word in _APOS_S:
        return [word[:-2], "is"]
    return [word]


def lexical_features(text: str) -> LexicalFeatures:
    """Extract the guard's features from ``text``."""
    folded = _fold(text)
    negations = 0
    numbers: set[str] = set()
    digit_numbers: set[str] = set()
    dates: set[str] = set()
    entities: set[str] = set()
    acronyms: set[str] = set()
    possessives: set[str] = set()
    positions: set[str] = set()
    tokens: set[str] = set()
    stems: set[str] = set()
    content: list[str] = []
    sequence: list[str] = []
    words: list[str] = []
    cased: list[str] = []
    prev_number = False
    negated: set[str] = set()
    negated_at = -1
    matches = list(_WORD_RE.finditer(folded))
    for idx, m in enumerate(matches):
        raw = m.group(0)
        before = folded[: m.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:;"
        word = raw.strip(".,'-").lower()
        if not word:
            continue
        if sentence_start and (
            word in _GREETINGS or (word in _INTERJECTIONS and raw[-1:] in ",.!")
        ):
            continue
        parts = _expand(word)
        core_word = parts[0]
        if len(parts) > 1 and parts[1] == "not":
            negations += 1
            negated_at = len(words)
        elif (
            word in _STOPPERS
            and idx + 1 < len(matches)
            and matches[idx + 1].group(0).lower().endswith("ing")
        ):
            negations += 1  # "stop watering", "avoid eating"
        elif word == "not" and words and words[-1] in _WHETHER:
            pass
        elif word in _NEGATORS or word.startswith(("non-", "no-")):
            negations += 1
            if word in _NEGATORS:
                negated_at = len(words)
        if core_word.endswith("'s") or (core_word.endswith("s'") and len(core_word) > 3):
            owner = core_word.removesuffix("'s").rstrip("'")
            if word not in _APOS_S:
                possessives.add(_singular(owner))
            core_word = owner
            parts[0] = owner
        word = core_word
        sub = [p for p in word.split("-") if p] if "-" in word else []
        for w in (word, *sub):
            tokens.add(w)
            tokens.add(_singular(w))
            stems.add(_stem(w))
        for p in parts[1:]:
            tokens.add(p)
        if (
            negated_at >= 0
            and len(words) > negated_at
            and word not in _STOPWORDS
            and word not in _NEGATORS
        ):
            if len(words) - negated_at <= 3:
                negated.add(_stem(word))
            negated_at = -1
        words.append(word)
        cased.append(raw.strip(".,!?'-"))
        sequence.extend(p for p in parts if p not in _FILLERS)
        if word not in _STOPWORDS and word not in _NEGATORS and word not in _FILLERS:
            content.append(word)
        num = _number(word)
        if word == "one":
            nxt = matches[idx + 1].group(0).lower() if idx + 1 < len(matches) else ""
            prev = words[-1] if words else ""
            if nxt and nxt not in _NOT_ONE and prev not in _NOT_ONE and prev not in _DETERMINERS:
                num = ("1", None, False)
        after = folded[m.end() : m.end() + 1]
        if num is not None and (after == ")" or (after == "." and sentence_start)):
            num = None  # a list marker: "1)", "2."
        elif num is not None:
            value, unit, from_digits = num
            numbers.add(value)
            if from_digits:
                digit_numbers.add(value)
            if unit in ("am", "pm"):
                dates.add(unit)
        elif word in _DAYPARTS:
            if word not in ("am", "a.m") or prev_number:
                dates.add(_DAYPARTS[word])
        elif word in _AMBIGUOUS_DATES:
            nxt = matches[idx + 1].group(0) if idx + 1 < len(matches) else ""
            if (raw[:1].isupper() and not sentence_start) or prev_number or nxt[:1].isdigit():
                dates.add("march" if word == "mar" else "december" if word == "dec" else word)
        elif word in _DATES or _singular(word) in _DATES:
            dates.add(word if word in _DATES else _singular(word))
        for w in (word, *sub):
            if w in _POSITIONS and not prev_number:
                positions.add(_POSITIONS[w])
        prev_number = num is not None
        core = raw.strip(".,!?'-").removesuffix("'s")
        is_entity = (
            (core[:1].isupper() and not sentence_start)
            or (len(core) > 1 and core.isupper())
            or (any(c.isupper() for c in core[1:]) and any(c.islower() for c in core))
            or (any(c.isdigit() for c in core) and any(c.isalpha() for c in core))
        )
        if is_entity and core.lower() not in _NOT_ENTITIES and num is None:
            entities.add(core.lower())
            letters = "".join(c for c in core if c.isalnum())
            if 2 <= len(letters) <= 6 and letters.isupper():
                acronyms.add(letters.lower())
    # Phrasal verbs with their particle ("opt out", "take money out", "log in").
    extra: set[str] = set()
    for i, w in enumerate(words):
        if w in _PHRASAL:
            for p in words[i + 1 : i + 4]:
                if p in _PARTICLES:
                    extra.add(f"{w}_{p}")
                    break
    stems |= extra
    antonyms = stems & _POLAR_VOCAB
    initials: list[tuple[str, str]] = []
    for w in cased:
        if any(c.isupper() for c in w[1:]) and any(c.islower() for c in w):
            caps = "".join(c for c in w if c.isupper() or c.isdigit()).lower()
            initials.append((w.lower().removesuffix("'s"), caps))
    return LexicalFeatures(
        negation_parity=negations % 2,
        antonyms=frozenset(antonyms),
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        entities=frozenset(entities),
        possessives=frozenset(possessives),
        tokens=frozenset(tokens),
        content=frozenset(_singular(w) for w in content),
        sequence=tuple(sequence),
        stems=frozenset(stems),
        digit_numbers=frozenset(digit_numbers),
        positions=frozenset(positions),
        compact=_NON_ALNUM_RE.sub("", folded.lower()),
        initials=tuple(initials),
        acronyms=frozenset(acronyms),
        words=tuple(words),
        negated=frozenset(negated),
    )


def _antonym_clash(a: LexicalFeatures, b: LexicalFeatures) -> int:
    """How many polar groups one text takes one pole of and the other the other."""
    if not a.antonyms and not b.antonyms:
        return 0
    flips = 0
    for pos, neg in _POLAR:
        a_pos, a_neg = bool(pos & a.antonyms), bool(neg & a.antonyms)
        b_pos, b_neg = bool(pos & b.antonyms), bool(neg & b.antonyms)
        if (a_pos or a_neg) and (b_pos or b_neg) and (a_pos, a_neg) != (b_pos, b_neg):
            flips += 1  # "open" / "closed", and "pros and cons" / "pros"
    for key in a.stems | b.stems:
        if "_" in key and key not in _POLAR_VOCAB:
            verb, particle = key.split("_", 1)
            opposite = f"{verb}_{_PARTICLES[particle]}" if particle in _PARTICLES else ""
            if (
                key in a.stems
                and key not in b.stems
                and opposite in b.stems
                and opposite not in a.stems
                and not flips
            ):
                return 1
    return flips


def _prefix_negation(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    """Whether one text has ``unX`` / ``inX`` / ``disX``... where the other has ``X``."""
    for x, y in ((a, b), (b, a)):
        for s in x.stems - y.stems:
            for prefix in _NEG_PREFIXES:
                if prefix.startswith("non") and "non" in y.tokens:
                    continue  # "non proliferation" / "non-proliferation"
                if s.startswith(prefix):
                    rest = s[len(prefix) :].lstrip("-")
                    long_enough = len(rest) >= (5 if prefix in ("in", "im", "de") else 4)
                    if long_enough and rest in y.stems and rest not in x.stems:
                        return True
    return False


def _numbers_clash(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    if a.numbers == b.numbers:
        return False
    if a.numbers and b.numbers:
        return True
    # One side names no number: only a number in digits counts ("two essential
    # parts" is often dropped by a paraphrase, "2023" is not).
    return bool(a.digit_numbers or b.digit_numbers)


def _entity_known(e: str, other: LexicalFeatures) -> bool:
    if e in other.tokens or _singular(e) in other.tokens:
        return True
    if "." in e.strip("."):  # a dotted name: "datasets.Metric" / "Metric ... datasets"
        parts = [p for p in e.split(".") if p]
        if all(_entity_known(p, other) for p in parts):
            return True
    if len(e) >= 6 and any(len(t) >= 5 and e.startswith(t) for t in other.tokens):
        return True  # a derived word: "Pythonic" / "Python"
    flat = _NON_ALNUM_RE.sub("", e)
    if len(flat) >= 3 and flat in other.compact:
        return True
    if any(caps == e for _, caps in other.initials):
        return True
    if 2 <= len(flat) <= 6 and flat.isalpha():  # an acronym of the other's words
        n = len(flat)
        ws = [w for w in other.words if w not in _INITIALS_SKIP]
        for i in range(len(ws) - n + 1):
            if all(ws[i + k][:1] == flat[k] for k in range(n)):
                return True
    return False


def _expanded_by(e: str, x: LexicalFeatures, other: LexicalFeatures) -> bool:
    """Whether ``e`` (a word of ``x``) is part of a run that an acronym of ``other`` abbreviates."""
    ws = [w for w in x.words if w not in _INITIALS_SKIP]
    for acro in other.acronyms:
        n = len(acro)
        for i in range(len(ws) - n + 1):
            if e in ws[i : i + n] and all(ws[i + k][:1] == acro[k] for k in range(n)):
                return True
    return False


def _entities_clash(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    for x, y in ((a, b), (b, a)):
        for e in x.entities:
            if _entity_known(e, y) or _expanded_by(e, x, y):
                continue
            if any(w == e and caps in y.acronyms for w, caps in x.initials):
                continue  # "JavaScript" / "JS"
            return True
    return False


def _phrases_around(f: LexicalFeatures) -> list[tuple[str, set[str], set[str]]]:
    """The content words just before and just after each direction word."""
    seq = f.sequence
    out = []
    for i, w in enumerate(seq):
        if w not in _DIRECTIONS:
            continue
        w = _DIRECTIONS[w]
        sides: list[set[str]] = []
        for step in (-1, 1):
            found: set[str] = set()
            k = i + step
            while 0 <= k < len(seq) and len(found) < 3:
                x = seq[k]
                if x in _DIRECTIONS or (x in _STOPWORDS and x not in _DETERMINERS):
                    break
                if x not in _DETERMINERS:
                    found.add(_singular(x))
                k += step
            sides.append(found)
        out.append((w, sides[0], sides[1]))
    return out


def _direction_clash(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    """Whether the phrases around ``to`` / ``from`` / ``than``... change places.

    "transfer from savings to current" is not "transfer from current to savings".
    """
    if not (_DIRECTIONS.keys() & a.tokens and _DIRECTIONS.keys() & b.tokens):
        return False
    if max(len(a.sequence), len(b.sequence)) > _SHORT:
        return False
    pb = _phrases_around(b)
    for word, left, right in _phrases_around(a):
        for word_b, left_b, right_b in pb:
            if word == word_b and left & right_b and right & left_b:
                return True
    return False


def _same_word(x: str, y: str) -> bool:
    """Whether two words are spellings or forms of one word (a typo, a suffix)."""
    if _stem(x) == _stem(y):
        return True
    if x.endswith("est") and y.endswith("est") and len(x) > 5 and len(y) > 5:
        return True  # two superlatives: "quickest" / "fastest" (antonyms are caught before)
    if x[:1] != y[:1] or abs(len(x) - len(y)) > 4:
        return False
    n = 0
    for cx, cy in zip(x, y, strict=False):
        if cx != cy:
            break
        n += 1
    if n >= 4 and n >= 0.6 * min(len(x), len(y)):
        return True
    return min(len(x), len(y)) >= 4 and SequenceMatcher(None, x, y).ratio() >= 0.8


def _minimal_pair(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    """Whether the texts are the same words but for one short span with other content.

    "Can I bring checked luggage for free?" / "Can I bring hand luggage for free?",
    "What's my joint account balance?" / "What's my account balance?": the question is
    the same frame with another subject, which embeddings barely see. A paraphrase
    rewords more than one span; a typo or another form of the word is not a swap.
    """
    sa, sb = a.sequence, b.sequence
    if max(len(sa), len(sb)) > _SHORT:
        return False
    n = min(len(sa), len(sb))
    i = 0
    while i < n and sa[i] == sb[i]:
        i += 1
    j = 0
    while j < n - i and sa[-1 - j] == sb[-1 - j]:
        j += 1
    if i + j < 3:
        return False
    ma, mb = sa[i : len(sa) - j], sb[i : len(sb) - j]
    if sum(w not in _DETERMINERS for w in ma) > 2 or sum(w not in _DETERMINERS for w in mb) > 2:
        return False
    ca = [w for w in ma if w not in _STOPWORDS and w not in _PERSONS]
    cb = [w for w in mb if w not in _STOPWORDS and w not in _PERSONS]
    if not ca and not cb:
        return False
    if (ca and not cb and _PERSONS & set(mb)) or (cb and not ca and _PERSONS & set(ma)):
        return True  # another person: "can my child get" / "can I get"
    if ca and cb:
        if any(_same_word(x, y) for x in ca for y in cb):
            return False
        if all(w in _LIGHT_VERBS for w in ca) and all(w in _LIGHT_VERBS for w in cb):
            return False
        # Two verbs of a statement ("the method retrieves / selects records") are
        # reworded freely; two nouns after "for" / "my" / "the" are another scope.
        prev = sa[i - 1] if i else ""
        x, y = ca[0], cb[0]
        verbish = all(
            "-" not in w and (w.endswith(("ed",)) or (w.endswith("s") and not w.endswith("ss")))
            for w in (x, y)
        )
        return not (verbish and prev not in _DETERMINERS and prev not in _PREPOSITIONS)
    if ma and mb:  # a content word for function words: not a clear minimal pair
        return False
    # One side adds a word: a qualifier before a shared content word narrows the scope.
    added = ca or cb
    if all(w in _LIGHT_VERBS for w in added):
        return False
    nxt = sa[len(sa) - j] if j else ""
    return bool(nxt) and nxt not in _STOPWORDS


def lexical_match(
    query: str | LexicalFeatures,
    candidate: str | LexicalFeatures,
    *,
    substitution: bool = False,
) -> str | None:
    """Compare two texts; return ``None`` when they agree, else the reason they do not.

    Args:
        query: the query text (or its features).
        candidate: the cached entry's text (or its features).
        substitution: also refuse minimal pairs (the same words but for one short
            span with another content word, or a qualifier added before a shared
            word, see `_minimal_pair`): the ``"strict"`` guard. Measured on QQP it
            refuses more true duplicates than non-duplicates, so it is off by default;
            it pays where questions are short and templated (support FAQs).

    Example:
        >>> lexical_match("cancel my order", "don't cancel my order")
        'negation'
        >>> lexical_match("How do I reset my password?", "how can I reset my password")
    """
    a = query if isinstance(query, LexicalFeatures) else lexical_features(query)
    b = candidate if isinstance(candidate, LexicalFeatures) else lexical_features(candidate)
    # "unlock" / "lock" is one flip, whether it is listed or found by its prefix.
    antonyms = _antonym_clash(a, b) or int(_prefix_negation(a, b))
    flips = int(a.negation_parity != b.negation_parity)
    if flips and not antonyms and max(len(a.sequence), len(b.sequence)) > _SHORT:
        # A long text: a count of negators is noise ("without any coding" / "no-code")
        # unless a word negated on one side is affirmed on the other.
        flips = int(bool((a.negated - b.negated) & b.stems or (b.negated - a.negated) & a.stems))
    flips += antonyms
    if flips % 2:  # "not mandatory" is "optional": two flips cancel
        return "negation"
    if _numbers_clash(a, b):
        return "number"
    if a.dates != b.dates:
        return "date"
    if a.positions and b.positions and a.positions != b.positions:
        return "position"
    if _entities_clash(a, b):
        return "entity"
    # An owner ("my colleague's") must be named on both sides, possessive or not.
    if not (a.possessives <= b.tokens and b.possessives <= a.tokens):
        return "possessive"
    if _direction_clash(a, b):
        return "direction"
    if substitution and _minimal_pair(a, b):
        return "substitution"
    return None


def context_hash(context: Any) -> str:
    """Return the scope hash of a conversation context (``""`` for none).

    A context hash (32 lowercase hex characters, as returned here or by
    `chat_context`) is returned as it is.

    ``context`` is anything with a canonical encoding: typically a dict of the system
    prompt, the earlier turns, the model and the tools. The same context in any
    process gives the same hash; any change of it gives another.
    """
    if context is None or context == "" or context == {} or context == []:
        return ""
    if isinstance(context, str) and _HASH_RE.fullmatch(context):
        return context  # already a context hash
    return digest(context)


def chat_context(
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    tools: Any = None,
    system: str | None = None,
) -> tuple[str, str]:
    """Split a chat into ``(last user message, context hash)``.

    The context is everything the answer depends on besides the last message: the
    system prompt, every earlier turn, the model and the tools.

    Raises:
        ValueError: no messages, or the last one has no text content.
    """
    if not messages:
        raise ValueError("messages must not be empty")
    last = messages[-1]
    content = last.get("content") if isinstance(last, dict) else None
    if not isinstance(content, str) or not content:
        raise ValueError("the last message must have text content")
    ctx = {"system": system, "turns": list(messages[:-1]), "model": model, "tools": tools}
    if system is None and not messages[:-1] and model is None and tools is None:
        return content, ""
    return content, context_hash(ctx)
