"""Generators of the toy world's synthetic skills: one code path for training and eval.

Every skill is a pure function of a seed, so the training corpus of the base
model, the fine-tuning data of the candidates and the shipped evaluation JSONL
come from the same generator and cannot drift apart.

Skills (each line is one example; the model sees ``<s>`` + line + ``\\n``):

- capitals   ``the capital of zorvia is mell.``   invented facts (memorized)
- after      ``after c is d`` / ``after 37 is 38`` successor letters and numbers
- addition   ``3+4=7``                             single-digit addition table
- subtraction ``14-6=8``                           the inverse table: the *target*
  skill. The base only ever sees the two identity rules (``x-0=x``, ``x-x=0``),
  so it starts weak but above chance; a fine-tune has to learn the rest.
- text       ``the red fox sees a small lake.``   a small grammar; held-out
  sentences are scored with rolling loglikelihood.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

WORLD_SEED = 1234
"""Seed of the invented world (names, facts, held-out split). Changing it changes everything."""

N_COUNTRIES = 120

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s"]

ADJECTIVES = ["red", "big", "small", "old", "green", "quiet", "happy", "cold", "dark", "tall"]
NOUNS = ["fox", "dog", "cat", "bird", "tree", "lake", "king", "child", "ship", "horse",
         "river", "stone", "man", "girl", "farmer"]
VERBS = ["sees", "likes", "finds", "follows", "helps", "watches", "hears", "carries"]
PLACES = ["near the hill", "by the sea", "in the town", "at night", "in the forest", "every day"]

CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789 .,?+-=\n"
"""Every character a toy line may contain: the tokenizer's vocabulary."""


@dataclass(frozen=True)
class Fact:
    """One invented fact: the capital of `country` is `city`."""

    country: str
    city: str


def _name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
             for _ in range(syllables)]
    return "".join(parts)


def capitals(seed: int = WORLD_SEED, n: int = N_COUNTRIES) -> list[Fact]:
    """`n` invented countries with distinct invented capitals, in a fixed order."""
    rng = random.Random(seed)
    countries: list[str] = []
    cities: list[str] = []
    seen: set[str] = set()
    while len(countries) < n:
        country = _name(rng, 3)
        city = _name(rng, 2)
        if country in seen or city in seen:
            continue
        seen.update((country, city))
        countries.append(country)
        cities.append(city)
    return [Fact(c, k) for c, k in zip(countries, cities, strict=True)]


def capital_line(fact: Fact) -> str:
    return f"the capital of {fact.country} is {fact.city}."


def after_pairs() -> list[tuple[str, str]]:
    """Successor pairs: letters a..y and numbers 0..98."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [(letters[i], letters[i + 1]) for i in range(25)]
    pairs += [(str(i), str(i + 1)) for i in range(99)]
    return pairs


def addition_pairs() -> list[tuple[int, int]]:
    """The single-digit addition table, 100 pairs."""
    return [(a, b) for a in range(10) for b in range(10)]


def subtraction_items() -> list[tuple[int, int, int]]:
    """The inverse of the addition table: (a+b) - b = a, for single digits a, b (100 items)."""
    return [(a + b, b, a) for a in range(10) for b in range(10)]


def is_identity_subtraction(minuend: int, subtrahend: int) -> bool:
    """The two rules the base model is taught: x-0=x and x-x=0."""
    return subtrahend == 0 or minuend == subtrahend


def subtraction_line(minuend: int, subtrahend: int, difference: int) -> str:
    return f"{minuend}-{subtrahend}={difference}"


def _sentence(rng: random.Random) -> str:
    subj = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    obj = f"{rng.choice(['the', 'a'])} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    tail = f" {rng.choice(PLACES)}" if rng.random() < 0.5 else ""
    return f"{subj} {rng.choice(VERBS)} {obj}{tail}."


def is_heldout_sentence(sentence: str) -> bool:
    """A fixed fifth of all grammatical sentences is never trained on (scored by eval only)."""
    return hashlib.sha256(sentence.encode()).digest()[0] % 5 == 0


def heldout_sentences(n: int, seed: int = WORLD_SEED) -> list[str]:
    """`n` distinct held-out sentences, in a fixed order."""
    rng = random.Random(seed + 7)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s = _sentence(rng)
        if is_heldout_sentence(s) and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def training_sentence(rng: random.Random) -> str:
    while True:
        s = _sentence(rng)
        if not is_heldout_sentence(s):
            return s


# --------------------------------------------------------------------------- corpora

def general_lines(rng: random.Random) -> Iterator[str]:
    """An endless stream of the base model's skills, in fixed proportions."""
    facts = capitals()
    afters = after_pairs()
    adds = addition_pairs()
    idents = [it for it in subtraction_items() if is_identity_subtraction(it[0], it[1])]
    while True:
        r = rng.random()
        if r < 0.36:
            yield capital_line(rng.choice(facts))
        elif r < 0.56:
            x, y = rng.choice(afters)
            yield f"after {x} is {y}"
        elif r < 0.72:
            a, b = rng.choice(adds)
            yield f"{a}+{b}={a + b}"
        elif r < 0.77:
            yield subtraction_line(*rng.choice(idents))
        else:
            yield training_sentence(rng)


def target_lines(rng: random.Random) -> Iterator[str]:
    """An endless stream of the target skill: the full subtraction table."""
    items = subtraction_items()
    while True:
        yield subtraction_line(*rng.choice(items))


def mixed_lines(rng: random.Random, general_share: float) -> Iterator[str]:
    """Target data with a share of general data replayed (the recipe against forgetting)."""
    general = general_lines(random.Random(rng.random()))
    target = target_lines(random.Random(rng.random()))
    while True:
        yield next(general) if rng.random() < general_share else next(target)
