"""Text for synthesis: grammatical English sentences, voice commands with intents and slots,
and word sequences in other languages for language identification.

The English grammar draws open-class words from a hand-written lexicon plus the word lists
Faker ships (names, places, jobs, colours): thousands of distinct words, and combinatorially
many distinct sentences, so a model cannot memorise the transcripts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from faker import Faker
from num2words import num2words

from ...text import written_sentence

# --- a small lexicon; Faker supplies the long tail of proper nouns -----------------------

NOUNS = """
apple army artist baby bag bakery ball band bank basket bath beach bear bed bell bicycle
bird blanket boat book bottle box boy bread bridge brother brush bucket building bus
butter cabin cake camera camp candle captain car card carpet castle cat chair cheese
chicken child church city clock cloud coat coffee computer cook cottage country cousin
cow cup curtain dancer daughter desk doctor dog doll door dragon dream dress driver drum
duck eagle egg elephant engine engineer factory farm farmer father feather fence field
fish flag flower forest fork fox friend frog garden gate ghost gift girl glass glove goat
guitar hammer harbor hat hill horse hospital hotel house island jacket jar judge kettle
key king kitchen kite knife ladder lake lamp lawyer leaf letter library lion machine
map market mirror monkey moon mother mountain mouse museum nail neighbor nest newspaper
nurse ocean office orange painter palace pan paper parrot pencil piano picture pilot
pillow pirate plate pocket poet police pond potato prince princess queen rabbit radio
river road robot rock roof rope sailor sandwich school scientist sheep shelf ship shirt
shoe shop singer sister soldier spoon square station stone storm street student sugar
table tailor teacher telephone tent theater ticket tiger tower town toy tractor train
tree truck tunnel umbrella uncle valley village violin wagon wall wallet watch waiter
whale window wizard wolf writer
""".split()

ADJECTIVES = """
ancient angry bitter bold brave bright broken busy calm careful cheap clean clever cold
crooked curious damp dark dear deep dirty dusty eager early empty enormous fancy fast
fierce flat foolish fragile fresh friendly funny gentle giant golden graceful green
grumpy happy heavy helpful hidden hollow honest huge hungry icy jolly kind large lazy
little lively lonely long loud lucky magic mighty modern muddy narrow nervous new noisy
odd old orange patient plain polite poor precious proud quick quiet rapid rare rich
rough round rusty sad shiny short silent silly simple sleepy slow small smooth soft
sour strange strong sturdy sunny sweet tall tame tender thin tidy tiny tired ugly warm
weak wet white wicked wild wise wooden young
""".split()

# base form, past tense
VERBS = [tuple(v.split("/")) for v in """
admire/admired borrow/borrowed build/built buy/bought carry/carried catch/caught
chase/chased clean/cleaned climb/climbed collect/collected cook/cooked cover/covered
deliver/delivered discover/discovered draw/drew drop/dropped fetch/fetched fill/filled
find/found fix/fixed follow/followed forget/forgot greet/greeted guard/guarded hide/hid
hold/held keep/kept kick/kicked lift/lifted like/liked lose/lost love/loved make/made
mend/mended miss/missed move/moved need/needed open/opened order/ordered paint/painted
pack/packed pick/picked pull/pulled push/pushed read/read remember/remembered
repair/repaired return/returned see/saw sell/sold send/sent share/shared show/showed
sketch/sketched steal/stole take/took teach/taught throw/threw touch/touched
visit/visited want/wanted wash/washed watch/watched wrap/wrapped write/wrote
""".split()]

INTRANSITIVE = """
arrived cried danced disappeared fell laughed left listened paused rested sang slept
smiled spoke stayed stopped swam waited walked whispered worked
""".split()

ADVERBS = """
angrily badly boldly briefly calmly carefully cheerfully clearly closely eagerly easily
gently gladly happily honestly kindly lazily loudly neatly nervously patiently politely
proudly quickly quietly rapidly sadly safely silently slowly softly suddenly swiftly
warmly wisely
""".split()

PREPOSITIONS = "near behind beside under above inside outside across".split()

TIMES = ("yesterday", "today", "tomorrow", "tonight", "this morning", "last night", "next week",
         "on monday", "on tuesday", "on wednesday", "on thursday", "on friday", "on saturday",
         "on sunday", "at noon")

RELATIONS = "aunt uncle cousin sister brother neighbor friend grandmother grandfather teacher".split()

ROOMS = ("kitchen", "bedroom", "bathroom", "living room", "office", "garage", "hallway", "basement")

# Faker locales whose person names widen the English vocabulary (espeak reads them fine).
NAME_LOCALES = ("en_US", "en_GB", "en_IN", "en_IE", "en_NZ", "en_AU", "en_CA", "en_PH")

# Languages for language identification: Faker's real-word lorem lists for these locales
# (pt_PT and others fall back to Latin, so they are left out).
FOREIGN_LOCALES = {
    "de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT",
    "nl": "nl_NL", "pl": "pl_PL", "cs": "cs_CZ",
}


def plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun in ("knife", "leaf", "wolf"):
        return {"knife": "knives", "leaf": "leaves", "wolf": "wolves"}[noun]
    return noun + "s"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def spoken_number(n: int) -> str:
    return num2words(n).replace("-", " ").replace(",", "")


_NON_WORD = re.compile(r"[^a-zA-Z' ]+")


def clean_words(s: str) -> str:
    """Keep letters, apostrophes and spaces: what the CTC character vocabulary covers."""
    return " ".join(_NON_WORD.sub(" ", s).split())


@dataclass
class Utterance:
    text: str
    language: str = "en"
    kind: str = "sentence"  # sentence | command | foreign | natural | parallel | codeswitch
    intent: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    translation: str | None = None  # English written form (parallel and codeswitch)
    codeswitch_language: str | None = None  # the language of a codeswitch's swapped nouns


class TextSource:
    """Deterministic generator of utterance texts from a seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in NAME_LOCALES}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed * 31 + i)
        self.foreign = {lang: Faker(loc) for lang, loc in FOREIGN_LOCALES.items()}
        for i, f in enumerate(self.foreign.values()):
            f.seed_instance(seed * 37 + i)
        en = self.fakers["en_US"]
        self.jobs = self._word_list(en.job, 400)
        # proper nouns keep their capitals: the written form is what the decoder learns
        self.cities = self._word_list(lambda: self.fakers[self.rng.choice(NAME_LOCALES)].city(), 600, proper=True)
        self.colors = self._word_list(en.color_name, 100)
        self.countries = self._word_list(en.country, 200, proper=True)

    # Faker's providers are sampled, then cleaned and de-duplicated, once per source.
    def _word_list(self, make, n: int, proper: bool = False) -> list[str]:
        seen = dict.fromkeys(clean_words(make()) if proper else clean_words(make()).lower() for _ in range(n))
        return [w for w in seen if w]

    def _name(self) -> str:
        f = self.fakers[self.rng.choice(NAME_LOCALES)]
        return clean_words(f.first_name() + " " + f.last_name())

    def _first_name(self) -> str:
        return clean_words(self.fakers[self.rng.choice(NAME_LOCALES)].first_name())

    def _subject(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self._name()
        if r < 0.55:
            return "the " + self.rng.choice(self.jobs)
        if r < 0.7:
            return "my " + self.rng.choice(RELATIONS)
        return f"the {self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}"

    def _object(self) -> str:
        r = self.rng.random()
        noun = self.rng.choice(NOUNS)
        if r < 0.4:
            return f"the {self.rng.choice(ADJECTIVES)} {noun}"
        if r < 0.6:
            return f"{spoken_number(self.rng.randint(2, 99))} {self.rng.choice(ADJECTIVES)} {plural(noun)}"
        if r < 0.8:
            adj = self.rng.choice(self.colors + ADJECTIVES)
            return f"{article(adj)} {adj} {noun}"
        return f"{self._first_name()}'s {noun}"

    def _place(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(self.cities)
        if r < 0.6:
            return self.rng.choice(self.countries)
        return f"the {self.rng.choice(NOUNS)}"

    def _time(self) -> str:
        return self.rng.choice(TIMES)

    def sentence(self) -> Utterance:
        c = self.rng.choice
        templates = [
            lambda: f"{self._subject()} {c(VERBS)[1]} {self._object()} {c(PREPOSITIONS)} {self._place()}",
            lambda: f"{self._subject()} {c(VERBS)[1]} {self._object()} because {self._subject()} {c(INTRANSITIVE)} {c(ADVERBS)}",
            lambda: f"in {self._place()} {self._subject()} {c(ADVERBS)} {c(VERBS)[1]} {self._object()}",
            lambda: f"{self._subject()} said that {self._object()} was {c(ADJECTIVES)} and {c(ADJECTIVES)}",
            lambda: f"did {self._subject()} {c(VERBS)[0]} {self._object()} {self._time()}",
            lambda: f"{self._subject()} will {c(VERBS)[0]} {self._object()} {self._time()}",
            lambda: f"{self._subject()} {c(INTRANSITIVE)} {c(ADVERBS)} {c(PREPOSITIONS)} {self._place()} {self._time()}",
            lambda: f"{self._name()} works as {article(j := c(self.jobs))} {j} in {self._place()}",
            lambda: f"{self._time()} {self._subject()} and {self._subject()} {c(INTRANSITIVE)} in {self._place()}",
        ]
        k = self.rng.randrange(len(templates))
        text = templates[k]()
        # written form: names and places capitalised, a full stop, or a question mark after
        # the template that asks ("did ...")
        return Utterance(text=written_sentence(clean_words(text), question=text.startswith("did ")))

    def command(self) -> Utterance:
        _, intent, text, slots = self.rng.choice(COMMANDS)(self)
        text = clean_words(text)
        return Utterance(text=written_sentence(text, question=text.startswith("what ")), kind="command",
                         intent=intent, slots={k: clean_words(v).lower() for k, v in slots.items()})

    def foreign_sentence(self, language: str) -> Utterance:
        f = self.foreign[language]
        words = f.words(nb=self.rng.randint(6, 14))
        return Utterance(text=written_sentence(" ".join(words).lower()), language=language, kind="foreign")


def _clock(src: TextSource) -> str:
    h, m = src.rng.randint(1, 12), src.rng.choice([0, 15, 30, 45, 5, 20, 40, 50])
    half = src.rng.choice(["a m", "p m"])
    return f"{spoken_number(h)} {'o clock' if m == 0 else spoken_number(m)} {half}"


def _duration(src: TextSource) -> str:
    n = src.rng.randint(2, 59)
    return f"{spoken_number(n)} {src.rng.choice(['minutes', 'seconds', 'hours'])}"


# Each command returns (template id, intent, text, slots); slot values appear verbatim in text.
COMMANDS = [
    lambda s: ("alarm", "set_alarm", f"wake me up at {(t := _clock(s))}", {"time": t}),
    lambda s: ("alarm2", "set_alarm", f"set an alarm for {(t := _clock(s))} {s._time()}", {"time": t}),
    lambda s: ("timer", "set_timer", f"start a timer for {(d := _duration(s))}", {"duration": d}),
    lambda s: ("music", "play_music", f"play some music by {(a := s._name())}", {"artist": a}),
    lambda s: ("call", "call_contact", f"call {(n := s._name())} on the mobile phone", {"contact": n}),
    lambda s: ("call2", "call_contact", f"please phone my {(n := s.rng.choice(RELATIONS))}", {"contact": n}),
    lambda s: ("msg", "send_message", f"send a message to {(n := s._first_name())} saying i will be late", {"contact": n}),
    lambda s: ("weather", "weather_query", f"what is the weather like in {(c := s.rng.choice(s.cities))} {s._time()}", {"city": c}),
    lambda s: ("nav", "navigate", f"give me directions to {(c := s.rng.choice(s.cities))}", {"destination": c}),
    lambda s: ("list", "add_to_list", f"add {(i := plural(s.rng.choice(NOUNS)))} to my shopping list", {"item": i}),
    lambda s: ("on", "lights_on", f"turn on the lights in the {(r := s.rng.choice(ROOMS))}", {"room": r}),
    lambda s: ("off", "lights_off", f"switch off the lights in the {(r := s.rng.choice(ROOMS))}", {"room": r}),
    lambda s: ("temp", "set_temperature", f"set the temperature to {(t := spoken_number(s.rng.randint(15, 30)))} degrees", {"temperature": t}),
    lambda s: ("book", "book_table", f"book a table for {(n := spoken_number(s.rng.randint(2, 9)))} people at {(t := _clock(s))}", {"party_size": n, "time": t}),
    lambda s: ("cal", "check_calendar", f"what is on my calendar {(d := s._time())}", {"date": d}),
    lambda s: ("vol", "volume_up", f"turn the volume up {s.rng.choice(['a little', 'a lot', 'please'])}", {}),
]

INTENTS = sorted({"set_alarm", "set_timer", "play_music", "call_contact", "send_message",
                  "weather_query", "navigate", "add_to_list", "lights_on", "lights_off",
                  "set_temperature", "book_table", "check_calendar", "volume_up"})
