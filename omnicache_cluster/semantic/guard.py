"""The lexical guard and the conversation-context hash of the semantic caches.

Embeddings place "cancel my order" and "don't cancel my order" next to each other,
and "open on Saturday" next to "open on Sunday". The guard compares the words that
carry such differences, which embeddings blur:

* **negation**: the parity of negators (``not``, ``n't``, ``never``, ``no``,
  ``without``, ``non-``...) must match, and neither side may use one word of an
  antonym pair (lock/unlock, open/closed, on/off, ...) while the other uses the
  opposite word;
* **numbers**: digits and number words (``fifteen`` = 15) must be the same sets;
* **dates and times**: weekdays, months and relative days (``tomorrow``) must be
  the same sets (years are numbers);
* **named entities**: a capitalised word that does not open a sentence, an acronym
  or a word with inner capitals or digits in either text must occur in the other;
* **possessives**: ``my colleague's password`` is not ``my password``.

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
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "shan't": "shall not",
    "ain't": "is not",
}
_APOS_S = {
    "what's", "it's", "that's", "there's", "here's", "who's", "where's", "how's", "let's",
    "he's", "she's", "when's", "why's", "which's", "one's",
}  # fmt: skip
_NEGATORS = {"not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor"}
_ANTONYMS = [
    ("lock", "unlock"), ("open", "closed"), ("open", "close"), ("on", "off"),
    ("enable", "disable"), ("enabled", "disabled"), ("include", "exclude"),
    ("includes", "excludes"), ("allowed", "banned"), ("allowed", "forbidden"),
    ("allowed", "prohibited"), ("safe", "unsafe"), ("upgrade", "downgrade"),
    ("pause", "resume"), ("start", "stop"), ("add", "remove"), ("subscribe", "unsubscribe"),
    ("increase", "decrease"), ("most", "least"), ("before", "after"), ("eat", "avoid"),
    ("accept", "reject"), ("activate", "deactivate"), ("join", "leave"), ("buy", "sell"),
    ("win", "lose"), ("import", "export"), ("upload", "download"), ("hide", "show"),
    ("enrol", "withdraw"), ("enroll", "withdraw"), ("login", "logout"), ("maximum", "minimum"),
    ("max", "min"), ("more", "less"), ("best", "worst"), ("cheapest", "dearest"),
    ("cheapest", "most expensive"), ("highest", "lowest"), ("first", "last"),
    ("legal", "illegal"), ("possible", "impossible"), ("valid", "invalid"),
    ("cover", "exclude"), ("increase", "reduce"), ("encrypt", "decrypt"), ("mute", "unmute"),
    ("block", "unblock"), ("follow", "unfollow"), ("install", "uninstall"),
    ("connect", "disconnect"), ("agree", "disagree"), ("like", "dislike"),
    ("true", "false"), ("good", "bad"), ("pros", "cons"), ("advantages", "disadvantages"),
    ("above", "below"), ("over", "under"), ("inside", "outside"), ("with", "without"),
]  # fmt: skip
_UNITS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12, "half": 0.5,
    "third": 3, "fourth": 4, "fifth": 5, "tenth": 10,
    "once": 1, "twice": 2, "double": 2, "triple": 3,
}  # fmt: skip
_DATES = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "weekend", "weekday", "january", "february", "march", "april", "may", "june", "july",
    "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "today", "tonight",
    "tomorrow", "yesterday", "morning", "afternoon", "evening", "night", "midnight",
    "noon", "christmas", "easter",
}  # fmt: skip
# Words that open a message as a greeting or close it as thanks: no features.
_GREETINGS = {"hi", "hello", "hey", "morning", "evening", "afternoon", "thanks", "cheers", "thank"}
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
    "possible", "available", "able", "currently", "actually",
}  # fmt: skip
# Light verbs that paraphrases swap freely ("change" / "update" my password): a swap
# of two of them is not a minimal pair.
_LIGHT_VERBS = {
    "change", "update", "switch", "modify", "edit", "make", "submit", "send", "file",
    "filing", "submitting", "set", "create", "start", "begin", "order", "request",
    "register", "sign", "get", "obtain", "find", "apply", "need", "needed", "take", "use",
    "see", "check", "fix", "repair", "call", "phone", "contact", "reach", "come", "include",
}  # fmt: skip
_NOT_ENTITIES = {"i", "i'm", "i'd", "i've", "i'll", "ok", "hi", "hello", "thanks", "please"}
_HASH_RE = re.compile(r"[0-9a-f]{32}")
_WORD_RE = re.compile(r"[A-Za-z0-9£$€%][\w£$€%.,'’\-]*")
_NUM_RE = re.compile(
    r"[£$€]?(\d+(?:[.,]\d+)*)(?:%|st|nd|rd|th|am|pm|k|m|bn|gb|mb|tb|kb|kg|km|g|mg|ml|l|h|hr|hrs"
    r"|s|x|p|yr|yrs|min|mins|ft|cm|mm|lb|lbs|mph)?(?:-[a-z]+)?"
)


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


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _number(word: str) -> str | None:
    m = _NUM_RE.fullmatch(word)
    if m:
        raw = m.group(1).rstrip(".,")
        if "," in raw and re.fullmatch(r"\d{1,3}(,\d{3})+", raw):
            raw = raw.replace(",", "")
        try:
            value = float(raw.replace(",", "."))
        except ValueError:
            return raw
        return format(value, "g")
    value = _UNITS.get(word)
    return None if value is None else format(float(value), "g")


def lexical_features(text: str) -> LexicalFeatures:
    """Extract the guard's features from ``text``."""
    folded = _fold(text)
    negations = 0
    numbers: set[str] = set()
    dates: set[str] = set()
    entities: set[str] = set()
    possessives: set[str] = set()
    tokens: set[str] = set()
    content: list[str] = []
    for m in _WORD_RE.finditer(folded):
        raw = m.group(0)
        before = folded[: m.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:;"
        word = raw.strip(".,'-").lower()
        if not word or (sentence_start and word in _GREETINGS):
            continue
        if word in _CONTRACTIONS:
            negations += 1
            word = _CONTRACTIONS[word].split()[0]
        elif word.endswith("n't"):
            negations += 1
            word = word[:-3]
        elif word in _NEGATORS or word.startswith("non-"):
            negations += 1
        if word.endswith("'s") or (word.endswith("s'") and len(word) > 3):
            if word not in _APOS_S:
                possessives.add(_singular(word.removesuffix("'s").rstrip("'")))
            word = word.removesuffix("'s").rstrip("'")
        tokens.add(word)
        tokens.add(_singular(word))
        if word not in _STOPWORDS and word not in _NEGATORS:
            content.append(word)
        num = _number(word)
        if num is not None:
            numbers.add(num)
        if word in _DATES or _singular(word) in _DATES:
            dates.add(word if word in _DATES else _singular(word))
        core = raw.strip(".,!?'-").removesuffix("'s")
        is_entity = (
            (core[:1].isupper() and not sentence_start)
            or (len(core) > 1 and core.isupper())
            or (any(c.isupper() for c in core[1:]) and any(c.islower() for c in core))
            or (any(c.isdigit() for c in core) and any(c.isalpha() for c in core))
        )
        if is_entity and core.lower() not in _NOT_ENTITIES and num is None:
            entities.add(core.lower())
    antonyms = {w for pair in _ANTONYMS for w in pair if w in tokens}
    return LexicalFeatures(
        negation_parity=negations % 2,
        antonyms=frozenset(antonyms),
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        entities=frozenset(entities),
        possessives=frozenset(possessives),
        tokens=frozenset(tokens),
        content=frozenset(_singular(w) for w in content),
    )


def _antonym_clash(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    for x, y in _ANTONYMS:
        if (x in a.antonyms and y in b.antonyms and x not in b.antonyms) or (
            y in a.antonyms and x in b.antonyms and y not in b.antonyms
        ):
            return True
    return False


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
        substitution: also refuse minimal pairs (one content word swapped, added or
            dropped, see `_one_word_swap`): the ``"strict"`` guard. Measured on QQP it
            refuses more true duplicates than non-duplicates, so it is off by default;
            it pays where questions are short and templated (support FAQs).

    Example:
        >>> lexical_match("cancel my order", "don't cancel my order")
        'negation'
        >>> lexical_match("How do I reset my password?", "how can I reset my password")
    """
    a = query if isinstance(query, LexicalFeatures) else lexical_features(query)
    b = candidate if isinstance(candidate, LexicalFeatures) else lexical_features(candidate)
    if a.negation_parity != b.negation_parity or _antonym_clash(a, b):
        return "negation"
    if a.numbers != b.numbers:
        return "number"
    if a.dates != b.dates:
        return "date"
    if not (a.entities <= b.tokens and b.entities <= a.tokens):
        return "entity"
    # An owner ("my colleague's") must be named on both sides, possessive or not.
    if not (a.possessives <= b.tokens and b.possessives <= a.tokens):
        return "possessive"
    if substitution and _one_word_swap(a, b):
        return "substitution"
    return None


def _typo(x: str, y: str) -> bool:
    """Whether two words are spellings of one word (a small edit, or a prefix)."""
    if x.startswith(y) or y.startswith(x):
        return min(len(x), len(y)) >= 4
    return min(len(x), len(y)) >= 4 and SequenceMatcher(None, x, y).ratio() >= 0.75


def _one_word_swap(a: LexicalFeatures, b: LexicalFeatures) -> bool:
    """Whether ``b`` is ``a`` with one content word swapped, added or dropped.

    Questions that differ in a single content word ("pool" / "gym", "gift" /
    "gift card", "puppy" / "kitten") are minimal pairs: their embeddings are nearly
    identical while the answers differ. A typo ("chnage") is not a swap. Real
    paraphrases differ in more words, so this costs few hits.
    """
    only_a = a.content - b.content
    only_b = b.content - a.content
    if len(only_a) + len(only_b) == 0 or len(only_a) > 1 or len(only_b) > 1:
        return False
    if not a.content & b.content:
        return False
    if only_a and only_b:
        (x,), (y,) = only_a, only_b
        return not (_typo(x, y) or (x in _LIGHT_VERBS and y in _LIGHT_VERBS))
    (word,) = only_a or only_b
    return word not in _LIGHT_VERBS


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
