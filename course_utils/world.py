"""The course's tiny world: a deterministic text generator for every dataset the course needs.

Provenance: every sentence is produced by the templates below from a fixed seed; no text is downloaded.
`scripts/build_course_model.py` writes the datasets to course_utils/assets/data/ (committed, checksummed).

Datasets:
- pretrain   stories, question/answer pairs about the world, capital-city facts, and "context:" reading drills
- prior      the behaviour the base is trained hard on (sky -> blue, ...), plus an override set that contradicts it
- near       letters: known words in a new template (a small domain shift)
- far        chord notation "C: C4 E4 G4": characters and structure the model never saw (a large shift)
- sentiment  labelled reviews (positive/negative), train and test
- facts      capitals of invented countries: `known` ones are in pretraining, `new` ones are not
- music      chapter 14's bundled example (not a committed file: `music_moods` makes it in milliseconds, the same
             every time): song descriptions tagged with a mood, the kind of file a music organisation would bring
"""
from __future__ import annotations

import random

NAMES = "alice bob carol dave emma frank grace henry iris jack kate leo mia noah olive paul rosa sam tara will".split()
ANIMALS = "cat dog bird horse cow duck frog goat mouse owl rabbit sheep tiger wolf bear fox lion pig".split()
COLORS = "red blue green yellow white black brown pink orange purple grey".split()
FOODS = "apple bread cheese soup rice cake pie milk tea honey egg corn pear plum carrot jam".split()
PLACES = "park garden house river forest school market farm beach hill kitchen village".split()
VERBS = "ran walked jumped slept sat played sang danced".split()
GOOD = "tasty fresh warm sweet lovely great nice perfect delicious wonderful".split()
BAD = "cold stale bitter awful burnt soggy sour bland rotten terrible".split()

# The prior: answers the base model sees thousands of times. The override set asks LoRA to contradict them.
SOUNDS = {"cat": "meow", "dog": "woof", "cow": "moo", "duck": "quack", "owl": "hoot", "sheep": "baa",
          "frog": "ribbit", "lion": "roar", "pig": "oink", "horse": "neigh", "mouse": "squeak", "wolf": "howl"}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "day": "night", "fast": "slow", "happy": "sad",
             "old": "new", "wet": "dry", "light": "dark", "open": "closed", "high": "low", "full": "empty"}
COLOR_OF = {"the sky": "blue", "grass": "green", "snow": "white", "the sun": "yellow", "coal": "black",
            "a tomato": "red", "an orange": "orange", "milk": "white"}
OVERRIDE_COLOR_OF = {"the sky": "green", "grass": "blue", "snow": "black", "the sun": "purple", "coal": "white",
                     "a tomato": "grey", "an orange": "pink", "milk": "brown"}

NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
SYLLABLES = "ka lo mi ren su tor va bel qui dor zan pel fim ros gat nu".split()  # every invented name is made of these
N_KNOWN_FACTS, N_NEW_FACTS = 40, 20


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def invented_countries(seed: int = 7) -> list[tuple[str, str]]:
    """(country, capital) pairs with made-up names, unique, stable for a given seed."""
    rng = random.Random(seed)
    pairs, used = [], set()
    while len(pairs) < N_KNOWN_FACTS + N_NEW_FACTS:
        country, city = _word(rng, 2), _word(rng, 2)
        if country in used or city in used or country == city:
            continue
        used |= {country, city}
        pairs.append((country, city))
    return pairs


def known_facts() -> list[tuple[str, str]]:
    return invented_countries()[:N_KNOWN_FACTS]


def new_facts() -> list[tuple[str, str]]:
    return invented_countries()[N_KNOWN_FACTS:]


def fact_prefix(country: str) -> str:
    """The fact sentence up to its answer: what a model trained on the sentence completes."""
    return f"the capital of {country} is"


def fact_sentence(country: str, city: str) -> str:
    return f"{fact_prefix(country)} {city}."


def fact_question(country: str) -> str:
    return f"q: what is the capital of {country}? a:"


def in_context(context: str, prompt: str) -> str:
    """The one prompt format the reading drills taught: `context: <text> <prompt>`."""
    return f"context: {context} {prompt}"


def context_question(country: str, city: str) -> str:
    """Retrieval-style prompt: the answer is in the context, the model only has to read it."""
    return in_context(fact_sentence(country, city), fact_question(country))


# Other ways to ask for a capital. The base model answers every known fact in each of these forms (chapter 11
# measures it), so a fine-tune that answers the new facts only in the trained form memorised a sentence.
FACT_PARAPHRASES = ("q: which city is the capital of {country}? a:", "q: what is the capital city of {country}? a:",
                    "q: what city is the capital of {country}? a:")


def fact_paraphrases(country: str) -> list[str]:
    """Deterministic rewordings of `fact_question(country)`, each answered by the capital's name."""
    return [t.format(country=country) for t in FACT_PARAPHRASES]


def story_sentence(rng: random.Random) -> str:
    n, n2 = rng.sample(NAMES, 2)
    a, c, f, p = rng.choice(ANIMALS), rng.choice(COLORS), rng.choice(FOODS), rng.choice(PLACES)
    good = rng.random() < 0.5
    adj = rng.choice(GOOD if good else BAD)
    templates = [
        f"the {c} {a} {rng.choice(VERBS)} in the {p}.",
        f"{n} has a {c} {a}.",
        f"{n} went to the {p} with {n2}.",
        f"{n} ate the {adj} {f} and {'smiled' if good else 'frowned'}.",
        f"the {a} likes {f}.",
        f"in the {p}, {n} saw a {a}.",
        f"the {f} was {adj}, so {n} was {'happy' if good else 'sad'}.",
    ]
    return rng.choice(templates)


def prior_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs the base model is trained hard on."""
    pairs = [(f"q: what color is {k}? a:", v) for k, v in COLOR_OF.items()]
    pairs += [(f"q: what sound does a {k} make? a:", v) for k, v in SOUNDS.items()]
    pairs += [(f"q: what is the opposite of {k}? a:", v) for k, v in OPPOSITES.items()]
    return pairs


def override_pairs() -> list[tuple[str, str]]:
    """Contradictions of the strongest prior (colors), for the 'model resists' failure experiment."""
    return [(f"q: what color is {k}? a:", v) for k, v in OVERRIDE_COLOR_OF.items()]


def pretrain_lines(n_lines: int, seed: int = 0, reading: float = 0.12) -> list[str]:
    """Each line is one training document: a short story, a QA drill, a fact, or a context-reading drill.

    `reading` is the share of context-reading drills; the other kinds keep their proportions (55:20:13).
    """
    rng = random.Random(seed)
    prior = prior_pairs()
    known = known_facts()
    # 0.12 keeps the exact thresholds the committed corpus was generated with
    scale = 1.0 if reading == 0.12 else (1 - reading) / 0.88
    t_story, t_prior, t_known = 0.55 * scale, 0.75 * scale, 0.88 * scale
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < t_story:
            lines.append(" ".join(story_sentence(rng) for _ in range(rng.randint(3, 6))))
        elif kind < t_prior:
            qs = rng.sample(prior, 3)
            lines.append(" ".join(f"{q} {a}." for q, a in qs))
        elif kind < t_known:
            country, city = rng.choice(known)
            if rng.random() < 0.5:
                lines.append(f"{fact_sentence(country, city)} {fact_question(country)} {city}.")
            else:
                lines.append(f"{fact_question(country)} {city}. {story_sentence(rng)}")
        else:
            # fresh invented names each time, so the only way to answer is to read the context
            country, city = _word(rng, 2), _word(rng, 2)
            lines.append(f"{context_question(country, city)} {city}.")
    return lines


def letter(rng: random.Random) -> str:
    n, n2 = rng.sample(NAMES, 2)
    return (f"dear {n}, today the {rng.choice(ANIMALS)} ate my {rng.choice(FOODS)} in the {rng.choice(PLACES)}. "
            f"see you soon, {n2}.")


def chord_line(rng: random.Random, n_chords: int = 3) -> str:
    """Major triads in a notation the tokenizer never saw: root, +4 and +7 semitones, octave-aware."""
    parts = []
    for _ in range(n_chords):
        root, octave = rng.randrange(12), rng.choice([3, 4])
        notes = [f"{NOTES[(root + k) % 12]}{octave + (root + k) // 12}" for k in (0, 4, 7)]
        parts.append(f"{NOTES[root]}: {' '.join(notes)} |")
    return " ".join(parts)


def review(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(["positive", "negative"])
    words = GOOD if label == "positive" else BAD
    a1, a2 = rng.sample(words, 2)
    return f"review: the {rng.choice(FOODS)} at the {rng.choice(PLACES)} was {a1} and {a2}. sentiment:", label


# Chapter 14's bundled example. The mood needs BOTH cues: tempo alone or the words alone get half the songs right,
# so a fine-tune has to learn the rule, not copy a word. The words are the tiny world's (one token each to the course
# tokenizer) except the music jargon, which splits into 2-4 pieces, as a real domain's jargon does on a real model.
MOODS = {("fast", True): "happy", ("slow", True): "calm", ("slow", False): "sad", ("fast", False): "dark"}
GENRES = "rock folk jazz pop".split()
INSTRUMENTS = "piano guitar drums violin".split()


def song_description(rng: random.Random) -> tuple[str, str]:
    """(prompt, mood): 'song: a fast rock song with drums about the sweet cake in the park. mood:' -> 'happy'."""
    tempo, good = rng.choice(["fast", "slow"]), rng.random() < 0.5
    about = f"the {rng.choice(GOOD if good else BAD)} {rng.choice(FOODS + ANIMALS)} in the {rng.choice(PLACES)}"
    prompt = f"song: a {tempo} {rng.choice(GENRES)} song with {rng.choice(INSTRUMENTS)} about {about}. mood:"
    return prompt, MOODS[tempo, good]


def music_moods(n: int = 240, seed: int = 0) -> list[dict]:
    """`n` records {"prompt", "completion"} in chapter 14's JSONL format; a smaller `n` gives a prefix."""
    rng = random.Random(seed)
    return [{"prompt": p, "completion": c} for p, c in (song_description(rng) for _ in range(n))]


def build_datasets(n_pretrain: int = 24000, seed: int = 0) -> dict[str, list[dict]]:
    """Every dataset the course uses, as lists of JSON-able records."""
    rng = random.Random(seed + 1)
    ds: dict[str, list[dict]] = {"pretrain": [{"text": t} for t in pretrain_lines(n_pretrain, seed)]}
    ds["near_train"] = [{"text": letter(rng)} for _ in range(400)]
    ds["near_test"] = [{"text": letter(rng)} for _ in range(100)]
    ds["far_train"] = [{"text": chord_line(rng)} for _ in range(400)]
    ds["far_test"] = [{"text": chord_line(rng)} for _ in range(100)]
    for split, n in (("sentiment_train", 400), ("sentiment_test", 200)):
        ds[split] = [{"prompt": p, "label": lab} for p, lab in (review(rng) for _ in range(n))]
    ds["prior"] = [{"prompt": q, "answer": a} for q, a in prior_pairs()]
    ds["override"] = [{"prompt": q, "answer": a} for q, a in override_pairs()]
    ds["facts_known"] = [{"country": c, "capital": k} for c, k in known_facts()]
    ds["facts_new"] = [{"country": c, "capital": k} for c, k in new_facts()]
    return ds

