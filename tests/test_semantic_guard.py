"""The lexical guard's rules on hand-written pairs: a trap per rule must miss, and a
paraphrase near it must still pass. Pure functions: no cluster, no data files."""

from __future__ import annotations

import time

import pytest

from omnicache_cluster.semantic.guard import lexical_features, lexical_match


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        # negation: antonym groups by stem, negative prefixes, phrasal particles
        (
            "Which features are included in the free tier?",
            "Which features are excluded from the free tier?",
            "negation",
        ),
        (
            "Which airlines allow pets in the cabin?",
            "Which airlines ban pets in the cabin?",
            "negation",
        ),
        (
            "What happens if my application is successful?",
            "What happens if my application is unsuccessful?",
            "negation",
        ),
        (
            "Is this medicine suitable during breastfeeding?",
            "Is this medicine unsuitable during breastfeeding?",
            "negation",
        ),
        ("What's the price for members?", "What's the price for non-members?", "negation"),
        (
            "How do I opt in to the workplace pension?",
            "How do I opt out of the workplace pension?",
            "negation",
        ),
        (
            "What are the benefits of remote work?",
            "What are the drawbacks of remote work?",
            "negation",
        ),
        (
            "Which subjects are optional at GCSE?",
            "Which subjects are compulsory at GCSE?",
            "negation",
        ),
        (
            "Should I water succulents in winter?",
            "Should I stop watering succulents in winter?",
            "negation",
        ),
        (
            "Which council tax bands have increased this year?",
            "Which council tax bands have decreased this year?",
            "negation",
        ),
        # numbers and dates
        ("Remind me at 7am", "Remind me at 7pm", "date"),
        (
            "How much to clean a five-bedroom house?",
            "How much to clean a two-bedroom house?",
            "number",
        ),
        ("How many calories are in three eggs?", "How many calories are in one egg?", "number"),
        ("Is the 18-year-old rate different?", "Is the 21-year-old rate different?", "number"),
        ("What are you doing in May?", "What are you doing in June?", "date"),
        # positions
        (
            "How much stamp duty on my first home?",
            "How much stamp duty on my second home?",
            "position",
        ),
        # entities
        ("Who is the CEO of Microsoft?", "Who is the CEO of Apple?", "entity"),
        # direction: the phrases around "to" / "from" / "into" change places
        (
            "Transfer £50 from my current account to my savings",
            "Transfer £50 from my savings to my current account",
            "direction",
        ),
        (
            "How do I migrate my database from Postgres to MySQL?",
            "How do I migrate my database from MySQL to Postgres?",
            "direction",
        ),
        (
            "How do I convert a PDF to a Word document?",
            "How do I convert a Word document to PDF?",
            "direction",
        ),
    ],
)
def test_traps_miss(a, b, why):
    assert lexical_match(a, b) == why, (a, b)
    assert lexical_match(b, a) == why, (b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # an answer-opening "No," is not a negation; "not mandatory" is "optional"
        ("LOAD_HU is not available in version 2.10.0.", "No, LOAD_HU doesn't exist in v2.10.0."),
        (
            "The parameter is not mandatory and defaults to None.",
            "The parameter is optional and defaults to None.",
        ),
        ("Is the restaurant not safe?", "Is the restaurant unsafe?"),
        ("Is it legal? Why or why not?", "Is it legal?"),
        ("Why isnt OF2 an oxide?", "Why isn't OF2 an oxide?"),
        # "may" the verb is not the month, "once" is not a number, list markers are not numbers
        ("You may want to read chapter 5.", "You can read chapter 5."),
        (
            "The map() function helps preprocess the entire dataset at once.",
            "The map() function preprocesses the whole dataset in one go.",
        ),
        (
            "It works in two steps: 1) it downloads the files, 2) it builds the dataset.",
            "It is a two-step process: it downloads the files, then builds the dataset.",
        ),
        # a spelled small number dropped by a paraphrase; a time of day said twice
        (
            "What are the two essential parts of the config?",
            "What are the essential parts of the config?",
        ),
        ("Could I get a table for two at seven this evening?", "Do you have a table for 2 at 7pm?"),
        # entities: acronyms, CamelCase, derived words, plurals, dotted names
        ("What does NLP stand for?", "What does natural language processing stand for?"),
        (
            "Huggingface.js is a collection of JS libraries.",
            "Hugging Face.js is a set of JavaScript libraries.",
        ),
        ("Can I save datasets in a Pythonic way?", "Can I save datasets using Python?"),
        (
            "How to load a dataset from Pandas DataFrames",
            "How to load a dataset from a Pandas DataFrame",
        ),
        (
            "The parameters of the datasets.TextClassification class",
            "The parameters of the TextClassification class of datasets",
        ),
        # direction words in both, same order
        ("How do I convert Word to PDF?", "How do I turn a Word file into a PDF?"),
        ("Send the invoice to Sarah", "Please email Sarah the invoice"),
    ],
)
def test_paraphrases_pass(a, b):
    assert lexical_match(a, b) is None, (a, b)
    assert lexical_match(b, a) is None, (b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Can I bring checked luggage for free?", "Can I bring hand luggage for free?"),
        ("What vaccines does my kitten need?", "What vaccines does my puppy need?"),
        ("What's the paracetamol dose for children?", "What's the paracetamol dose for adults?"),
        ("Can I get a next-day appointment?", "Can I get a same-day appointment?"),
        ("What's covered under the extended warranty?", "What's covered under the warranty?"),
        ("Can my child get the NHS flu jab for free?", "Can I get the NHS flu jab for free?"),
        ("Does the hotel have a pool?", "Does the hotel have a gym?"),
    ],
)
def test_strict_guard_refuses_minimal_pairs(a, b):
    # The default guard lets a one-word change of scope through (paraphrases swap
    # words too); the strict guard refuses the same frame with another subject.
    assert lexical_match(a, b) is None, (a, b)
    assert lexical_match(a, b, substitution=True) == "substitution", (a, b)
    assert lexical_match(b, a, substitution=True) == "substitution", (b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "How do I get a quotation for a new kitchen fitting?",
            "How do I get a quote for a new kitchen fitting?",
        ),
        (
            "What's the quickest way to learn touch typing?",
            "What is the fastest way to learn touch typing?",
        ),
        ("How do I chnage my email?", "How do I change my email?"),
        ("Just wondering, do you do takeaway?", "Do you do takeaway?"),
        (
            "The `filter` method retrieves records from a table.",
            "The `filter` method selects records from a table.",
        ),
        ("How do I change my password?", "How do I update my password?"),
    ],
)
def test_strict_guard_passes_rewordings(a, b):
    assert lexical_match(a, b, substitution=True) is None, (a, b)
    assert lexical_match(b, a, substitution=True) is None, (b, a)


def test_long_texts_ignore_a_stray_negator_but_not_a_negated_word():
    a = (
        "The AudioFolder builder is a fast way to generate an audio dataset with thousands "
        "of audio files without any coding, and it will infer the labels for you."
    )
    b = (
        "The AudioFolder builder is a no-code solution for quickly creating an audio "
        "dataset with several thousand audio files, and it infers the labels itself."
    )
    assert lexical_match(a, b) is None
    c = (
        "If you set the flag the dataset will be cached on disk after the first load, so "
        "that later runs of the same script read the cached copy instead."
    )
    d = (
        "If you set the flag the dataset will not be cached on disk after the first load, "
        "so that later runs of the same script read the source files instead."
    )
    assert lexical_match(c, d) == "negation"


def test_guard_is_fast():
    query = lexical_features("How do I transfer money from my current account to my savings?")
    cand = "How do I move money from my savings account into my current account?"
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        lexical_match(query, cand)
    per_pair = (time.perf_counter() - t0) / n
    assert per_pair < 2e-3  # well under a millisecond on a quiet machine
