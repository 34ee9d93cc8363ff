"""The parallel grammar (translation sentences) and code-switching: exact sentences for fixed
choices, every template in every language, determinism, variety, and the manifest contract of
the translate_* and codeswitch_test sets in the tiny corpus (the session fixture)."""

from __future__ import annotations

import logging
import re
import types

import pytest

from polyhead.data.corpus import label, load_set
from polyhead.data.labels import CHARS
from polyhead.data.synth.build import PRESETS, TRAINING_ENGINES, Planner
from polyhead.data.synth.parallel import (LANGUAGES, NOUNS, RELATIONS, TEMPLATES, Choice, ParallelSource, Person,
                                          render, render_codeswitch)
from polyhead.tasks.speech import SpeechKind

TRANSLATE = ["translate_train", "translate_dev", "translate_test"]
# written form: an opening ¿ (Spanish questions), a capital first letter, a full stop or question mark
WRITTEN = re.compile(r"¿?[^\W\d_]\S*( \S+)*[.?]")


def rel(en: str, gender: str) -> Person:
    return Person(relation=next(r for r in RELATIONS if r.en == en and r.gender == gender))


ANNA, MARCO = Person(name="Anna", gender="f"), Person(name="Marco", gender="m")

# (template, choice, {language: sentence}): written and checked by hand
EXPECTED = [
    ("predicative", Choice(noun="dog", adjective="big"), {
        "en": "The dog is big.", "de": "Der Hund ist groß.", "fr": "Le chien est grand.",
        "es": "El perro es grande.", "it": "Il cane è grande.", "nl": "De hond is groot."}),
    ("predicative", Choice(noun="box", adjective="empty", plural=True), {
        "en": "The boxes are empty.", "de": "Die Kisten sind leer.", "fr": "Les boîtes sont vides.",
        "es": "Las cajas están vacías.", "it": "Le scatole sono vuote.", "nl": "De dozen zijn leeg."}),
    ("see", Choice(noun="tree", adjective="old"), {
        "en": "I see the old tree.", "de": "Ich sehe den alten Baum.", "fr": "Je vois le vieil arbre.",
        "es": "Veo el árbol viejo.", "it": "Vedo l'albero vecchio.", "nl": "Ik zie de oude boom."}),
    ("see", Choice(noun="horse", adjective="white"), {
        "en": "I see the white horse.", "de": "Ich sehe das weiße Pferd.", "fr": "Je vois le cheval blanc.",
        "es": "Veo al caballo blanco.", "it": "Vedo il cavallo bianco.", "nl": "Ik zie het witte paard."}),
    ("see", Choice(noun="mirror"), {
        "en": "I see the mirror.", "de": "Ich sehe den Spiegel.", "fr": "Je vois le miroir.",
        "es": "Veo el espejo.", "it": "Vedo lo specchio.", "nl": "Ik zie de spiegel."}),
    ("see", Choice(noun="backpack", adjective="red", plural=True), {
        "en": "I see the red backpacks.", "de": "Ich sehe die roten Rucksäcke.",
        "fr": "Je vois les sacs à dos rouges.", "es": "Veo las mochilas rojas.",
        "it": "Vedo gli zaini rossi.", "nl": "Ik zie de rode rugzakken."}),
    ("see", Choice(noun="school", adjective="new"), {
        "en": "I see the new school.", "de": "Ich sehe die neue Schule.", "fr": "Je vois la nouvelle école.",
        "es": "Veo la escuela nueva.", "it": "Vedo la scuola nuova.", "nl": "Ik zie de nieuwe school."}),
    ("have", Choice(noun="horse", adjective="big", number=3), {
        "en": "We have three big horses.", "de": "Wir haben drei große Pferde.",
        "fr": "Nous avons trois grands chevaux.", "es": "Tenemos tres caballos grandes.",
        "it": "Abbiamo tre cavalli grandi.", "nl": "We hebben drie grote paarden."}),
    ("have", Choice(noun="apple", number=17), {
        "en": "We have seventeen apples.", "de": "Wir haben siebzehn Äpfel.", "fr": "Nous avons dix-sept pommes.",
        "es": "Tenemos diecisiete manzanas.", "it": "Abbiamo diciassette mele.", "nl": "We hebben zeventien appels."}),
    ("has_a", Choice(noun="book", adjective="new", person=rel("sister", "f")), {
        "en": "My sister has a new book.", "de": "Meine Schwester hat ein neues Buch.",
        "fr": "Ma sœur a un nouveau livre.", "es": "Mi hermana tiene un libro nuevo.",
        "it": "Mia sorella ha un libro nuovo.", "nl": "Mijn zus heeft een nieuw boek."}),
    ("has_a", Choice(noun="dog", adjective="small", person=ANNA), {
        "en": "Anna has a small dog.", "de": "Anna hat einen kleinen Hund.", "fr": "Anna a un petit chien.",
        "es": "Anna tiene un perro pequeño.", "it": "Anna ha un cane piccolo.", "nl": "Anna heeft een kleine hond."}),
    ("has_a", Choice(noun="umbrella", adjective="old", person=rel("friend", "m")), {
        "en": "My friend has an old umbrella.", "de": "Mein Freund hat einen alten Regenschirm.",
        "fr": "Mon ami a un vieux parapluie.", "es": "Mi amigo tiene un paraguas viejo.",
        "it": "Il mio amico ha un ombrello vecchio.", "nl": "Mijn vriend heeft een oude paraplu."}),
    ("where", Choice(noun="umbrella", adjective="black"), {
        "en": "Where is the black umbrella?", "de": "Wo ist der schwarze Regenschirm?",
        "fr": "Où est le parapluie noir?", "es": "¿Dónde está el paraguas negro?",
        "it": "Dov'è l'ombrello nero?", "nl": "Waar is de zwarte paraplu?"}),
    ("where", Choice(noun="hotel", plural=True), {
        "en": "Where are the hotels?", "de": "Wo sind die Hotels?", "fr": "Où sont les hôtels?",
        "es": "¿Dónde están los hoteles?", "it": "Dove sono gli alberghi?", "nl": "Waar zijn de hotels?"}),
    ("is_it", Choice(noun="cup", adjective="cold"), {
        "en": "Is the cup cold?", "de": "Ist die Tasse kalt?", "fr": "Est-ce que la tasse est froide?",
        "es": "¿La taza está fría?", "it": "La tazza è fredda?", "nl": "Is het kopje koud?"}),
    ("place", Choice(verb="born", person=rel("friend", "f"), city="Arezzo"), {
        "en": "My friend was born in Arezzo.", "de": "Meine Freundin ist in Arezzo geboren.",
        "fr": "Mon amie est née à Arezzo.", "es": "Mi amiga nació en Arezzo.",
        "it": "La mia amica è nata ad Arezzo.", "nl": "Mijn vriendin is in Arezzo geboren."}),
    ("place", Choice(verb="lives", person=rel("brother", "m"), city="Köln"), {
        "en": "My brother lives in Köln.", "de": "Mein Bruder wohnt in Köln.", "fr": "Mon frère habite à Köln.",
        "es": "Mi hermano vive en Köln.", "it": "Mio fratello abita a Köln.", "nl": "Mijn broer woont in Köln."}),
    ("travel", Choice(time="tomorrow", person=ANNA, city="Berlin"), {
        "en": "Tomorrow Anna goes to Berlin.", "de": "Morgen fährt Anna nach Berlin.",
        "fr": "Demain, Anna va à Berlin.", "es": "Mañana Anna va a Berlin.", "it": "Domani Anna va a Berlin.",
        "nl": "Morgen gaat Anna naar Berlin."}),
    ("travel", Choice(time="yesterday", person=MARCO, city="Lyon"), {
        "en": "Yesterday Marco went to Lyon.", "de": "Gestern ist Marco nach Lyon gefahren.",
        "fr": "Hier, Marco est allé à Lyon.", "es": "Ayer Marco fue a Lyon.", "it": "Ieri Marco è andato a Lyon.",
        "nl": "Gisteren ging Marco naar Lyon."}),
    ("travel", Choice(time="on Monday", person=rel("grandmother", "f"), city="Utrecht"), {
        "en": "On Monday my grandmother goes to Utrecht.", "de": "Am Montag fährt meine Großmutter nach Utrecht.",
        "fr": "Lundi, ma grand-mère va à Utrecht.", "es": "El lunes mi abuela va a Utrecht.",
        "it": "Lunedì mia nonna va a Utrecht.", "nl": "Op maandag gaat mijn grootmoeder naar Utrecht."}),
]


@pytest.mark.parametrize("template,choice,expected", EXPECTED)
def test_exact_sentences(template, choice, expected):
    for lang, sentence in expected.items():
        assert render(template, lang, choice) == sentence, lang


def test_every_template_in_every_language():
    src = ParallelSource(0)
    for lang in LANGUAGES:
        for template in TEMPLATES:
            for _ in range(15):
                c = src.choice(template, lang)
                text, english = render(template, lang, c), render(template, "en", c)
                assert WRITTEN.fullmatch(text) and WRITTEN.fullmatch(english), (lang, text, english)
                assert text.endswith("?") == english.endswith("?")
                assert (text.startswith("¿")) == (lang == "es" and text.endswith("?"))
    assert len(NOUNS) >= 40


def test_deterministic_distinct_and_accented():
    a, b, c = ParallelSource(3), ParallelSource(3), ParallelSource(4)
    ta = [(u.text, u.translation, u.language) for u in (a.parallel() for _ in range(200))]
    tb = [(u.text, u.translation, u.language) for u in (b.parallel() for _ in range(200))]
    tc = [(u.text, u.translation, u.language) for u in (c.parallel() for _ in range(200))]
    assert ta == tb and ta != tc
    assert len({t for t, _, _ in ta}) > 150
    assert {lang for _, _, lang in ta} == set(LANGUAGES)
    assert any(ch in "äöüßéèàçñìòù" for t, _, _ in ta for ch in t)  # accents are kept
    for lang in LANGUAGES:
        u = a.parallel(lang)
        assert u.language == lang and u.kind == "parallel" and u.translation


def test_codeswitch():
    mixed, english = render_codeswitch(0, ["key", "house"], [True, False], "de")
    assert (mixed, english) == ("I left my Schlüssel in the house.", "I left my key in the house.")
    mixed, english = render_codeswitch(4, ["dog", "bridge"], [True, True], "es")
    assert (mixed, english) == ("We saw three perros near the puente.", "We saw three dogs near the bridge.")
    src = ParallelSource(1)
    for lang in LANGUAGES * 10:
        u = src.codeswitch(lang)
        assert u.kind == "codeswitch" and u.language == "en" and u.codeswitch_language == lang
        foreign = set(u.text.rstrip(".?").split()) - set(u.translation.rstrip(".?").split())
        english = set(u.translation.rstrip(".?").split()) - set(u.text.rstrip(".?").split())
        assert foreign and english, u
        # the swapped words are the lexicon's nouns in that language, in place of the English ones
        known = {w for n in NOUNS.values() for w in n.forms[lang][:2] for w in w.split()}
        assert foreign <= known, u
        assert english <= {w for n in NOUNS.values() for w in n.en}, u


# --- in the corpus ------------------------------------------------------------------------------

def test_manifest_contract(tiny_corpus):
    out, summary = tiny_corpus
    for name in TRANSLATE + ["codeswitch_test"]:
        cuts = list(load_set(out, name))
        assert cuts and summary["sets"][name]["recordings"] == len(cuts), name
        for cut in cuts:
            assert len(cut.supervisions) == 1
            sup = cut.supervisions[0]
            c = sup.custom
            assert WRITTEN.fullmatch(sup.text) and WRITTEN.fullmatch(c["translation"]), sup
            assert label(cut, "translation") == c["translation"] != sup.text
            if name == "codeswitch_test":
                assert sup.language == "en" and c["kind"] == "codeswitch"
                assert c["codeswitch_language"] in LANGUAGES
            else:
                assert sup.language in LANGUAGES and c["kind"] == "parallel"
                assert "codeswitch_language" not in c
                assert c["voice"].startswith(("mbrola:", "espeak:"))
    langs = {cut.supervisions[0].language for cut in load_set(out, "translate_train")}
    assert len(langs) >= 2
    # no other set carries the new fields
    for sup in (s for c in load_set(out, "speech_train") for s in c.supervisions):
        assert "translation" not in sup.custom and "codeswitch_language" not in sup.custom


def test_ctc_vocabulary_drops_foreign_letters_without_crashing(tiny_corpus):
    """A translation cut with letters outside CHARS (ß, é, ...) is a cut the CTC speech task
    declines with a reason; the speech recipes never read these sets anyway."""
    out, _ = tiny_corpus
    kind = types.SimpleNamespace(target="text")
    reasons = [SpeechKind.check_cut(kind, cut, {"text": CHARS}) for name in TRANSLATE for cut in load_set(out, name)]
    assert all(r is None or r.startswith("characters outside the vocabulary") for r in reasons)


def test_existing_sets_unchanged_by_the_new_ones(voices):
    """The new sets are planned last: the other sets' jobs are those of a preset without them."""
    import dataclasses

    p = PRESETS["tiny"]
    without = dataclasses.replace(p, translation=(0, 0, 0), codeswitch=0)
    jobs_a, _ = Planner(p, 0, voices).plan()
    jobs_b, _ = Planner(without, 0, voices).plan()
    key = lambda j: (j.set_name, j.rec_id, j.seed, [(s.id, s.voice, sess, u) for s, sess, u in j.turns])
    old = [key(j) for j in jobs_a if not j.set_name.startswith(("translate_", "codeswitch_"))]
    assert old == [key(j) for j in jobs_b]
    assert len(jobs_a) - len(jobs_b) == sum(p.translation) * len(LANGUAGES) + p.codeswitch


def test_demo_plan_voices(voices):
    """Each language's own voices read it; dev and test at least half held-out voices (never
    a translate_train, speech_train or speaker_train voice); code-switching by English voices."""
    from collections import Counter

    jobs, speakers = Planner(PRESETS["demo"], 0, voices).plan()
    counts = Counter(j.set_name for j in jobs)
    langs = {spk.voice.language for spk in speakers["translate_train"]}
    assert counts["translate_train"] == 60 * len(langs) and counts["codeswitch_test"] == 40
    train_voices = {s.voice.id for n in ("translate_train", "speech_train", "speaker_train") for s in speakers[n]}
    for name in ("translate_dev", "translate_test"):
        for lang in langs:
            spks = [s for s in speakers[name] if s.voice.language == lang]
            assert spks and sum(s.voice.id not in train_voices for s in spks) >= len(spks) / 2, (name, lang)
    for j in jobs:
        if j.set_name.startswith(("translate_", "codeswitch_")):
            spk, _, utt = j.turns[0]
            assert spk.voice.language == utt.language and spk.voice.engine in TRAINING_ENGINES
    assert all(s.voice.language == "en" for s in speakers["codeswitch_test"])


def test_a_language_without_voices_is_left_out(voices, caplog):
    no_italian = tuple(v for v in voices if v.language != "it")
    with caplog.at_level(logging.WARNING):
        jobs, _ = Planner(PRESETS["tiny"], 0, no_italian).plan()
    assert "no voice reads it" in caplog.text
    langs = {u.language for j in jobs if j.set_name.startswith("translate_") for _, _, u in j.turns}
    assert langs and "it" not in langs


def test_the_same_seed_gives_the_same_sentences_in_any_process():
    """Faker's it_IT draws its cities from a list built from a set: without sorting it, a seed's
    sentences changed with PYTHONHASHSEED (the same `--seed`, another corpus)."""
    import os
    import subprocess
    import sys

    code = ("from polyhead.data.synth.parallel import ParallelSource; s = ParallelSource(0); "
            "print([s.parallel(l).text for l in s.languages for _ in range(30)], s.codeswitch().text)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(outs) == 1
