"""Parallel sentences (German, French, Spanish, Italian or Dutch with their English
counterpart) and code-switched English, for the translation and code-switching sets.

A hand-written parallel grammar, not machine translation: no translation corpus or library
is available offline, and a small grammar whose every rule is written out gives sentences a
native speaker accepts (genders, articles with French and Italian elision, adjective
agreement, German cases, German and Dutch verb-second order). A bilingual lexicon of nouns,
adjectives, relations and time words, eight templates, and Faker's first names and cities of
each language's locale (kept as written) give combinatorially many distinct sentences.

``render(template, lang, choice)`` writes one template from given choices (the tests check
exact outputs with it); ``ParallelSource`` draws the choices from a seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from faker import Faker
from num2words import num2words

from ...text import written_sentence
from .text import Utterance

LANGUAGES = ("de", "fr", "es", "it", "nl")
LOCALES = {"de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT", "nl": "nl_NL"}


# --- the lexicon ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Noun:
    en: tuple[str, str]  # singular, plural
    kinds: frozenset[str]  # what it is: which adjectives and templates fit it
    forms: dict[str, tuple[str, str, str]]  # language -> (singular, plural, gender)


# English | kinds | de | fr | es | it | nl ; each language: singular, plural, gender
# (de m/f/n, fr es it m/f, nl de/het)
_NOUN_TABLE = """
dog, dogs | animal | Hund, Hunde, m | chien, chiens, m | perro, perros, m | cane, cani, m | hond, honden, de
cat, cats | animal | Katze, Katzen, f | chat, chats, m | gato, gatos, m | gatto, gatti, m | kat, katten, de
horse, horses | animal | Pferd, Pferde, n | cheval, chevaux, m | caballo, caballos, m | cavallo, cavalli, m | paard, paarden, het
bird, birds | animal | Vogel, Vögel, m | oiseau, oiseaux, m | pájaro, pájaros, m | uccello, uccelli, m | vogel, vogels, de
cow, cows | animal | Kuh, Kühe, f | vache, vaches, f | vaca, vacas, f | mucca, mucche, f | koe, koeien, de
mouse, mice | animal | Maus, Mäuse, f | souris, souris, f | ratón, ratones, m | topo, topi, m | muis, muizen, de
rabbit, rabbits | animal | Kaninchen, Kaninchen, n | lapin, lapins, m | conejo, conejos, m | coniglio, conigli, m | konijn, konijnen, het
car, cars | vehicle | Auto, Autos, n | voiture, voitures, f | coche, coches, m | macchina, macchine, f | auto, auto's, de
bus, buses | vehicle | Bus, Busse, m | bus, bus, m | autobús, autobuses, m | autobus, autobus, m | bus, bussen, de
train, trains | vehicle | Zug, Züge, m | train, trains, m | tren, trenes, m | treno, treni, m | trein, treinen, de
bicycle, bicycles | vehicle | Fahrrad, Fahrräder, n | vélo, vélos, m | bicicleta, bicicletas, f | bicicletta, biciclette, f | fiets, fietsen, de
boat, boats | vehicle | Boot, Boote, n | bateau, bateaux, m | barco, barcos, m | barca, barche, f | boot, boten, de
house, houses | building | Haus, Häuser, n | maison, maisons, f | casa, casas, f | casa, case, f | huis, huizen, het
school, schools | building | Schule, Schulen, f | école, écoles, f | escuela, escuelas, f | scuola, scuole, f | school, scholen, de
church, churches | building | Kirche, Kirchen, f | église, églises, f | iglesia, iglesias, f | chiesa, chiese, f | kerk, kerken, de
hotel, hotels | building | Hotel, Hotels, n | hôtel, hôtels, m | hotel, hoteles, m | albergo, alberghi, m | hotel, hotels, het
station, stations | building | Bahnhof, Bahnhöfe, m | gare, gares, f | estación, estaciones, f | stazione, stazioni, f | station, stations, het
shop, shops | building | Laden, Läden, m | magasin, magasins, m | tienda, tiendas, f | negozio, negozi, m | winkel, winkels, de
bridge, bridges | building | Brücke, Brücken, f | pont, ponts, m | puente, puentes, m | ponte, ponti, m | brug, bruggen, de
tree, trees | tree | Baum, Bäume, m | arbre, arbres, m | árbol, árboles, m | albero, alberi, m | boom, bomen, de
flower, flowers | flower | Blume, Blumen, f | fleur, fleurs, f | flor, flores, f | fiore, fiori, m | bloem, bloemen, de
book, books | object | Buch, Bücher, n | livre, livres, m | libro, libros, m | libro, libri, m | boek, boeken, het
table, tables | object | Tisch, Tische, m | table, tables, f | mesa, mesas, f | tavolo, tavoli, m | tafel, tafels, de
chair, chairs | object | Stuhl, Stühle, m | chaise, chaises, f | silla, sillas, f | sedia, sedie, f | stoel, stoelen, de
door, doors | object | Tür, Türen, f | porte, portes, f | puerta, puertas, f | porta, porte, f | deur, deuren, de
window, windows | object | Fenster, Fenster, n | fenêtre, fenêtres, f | ventana, ventanas, f | finestra, finestre, f | raam, ramen, het
key, keys | object | Schlüssel, Schlüssel, m | clé, clés, f | llave, llaves, f | chiave, chiavi, f | sleutel, sleutels, de
bottle, bottles | object vessel | Flasche, Flaschen, f | bouteille, bouteilles, f | botella, botellas, f | bottiglia, bottiglie, f | fles, flessen, de
glass, glasses | object vessel | Glas, Gläser, n | verre, verres, m | vaso, vasos, m | bicchiere, bicchieri, m | glas, glazen, het
cup, cups | object vessel | Tasse, Tassen, f | tasse, tasses, f | taza, tazas, f | tazza, tazze, f | kopje, kopjes, het
bag, bags | object container | Tasche, Taschen, f | sac, sacs, m | bolso, bolsos, m | borsa, borse, f | tas, tassen, de
box, boxes | object container | Kiste, Kisten, f | boîte, boîtes, f | caja, cajas, f | scatola, scatole, f | doos, dozen, de
lamp, lamps | object | Lampe, Lampen, f | lampe, lampes, f | lámpara, lámparas, f | lampada, lampade, f | lamp, lampen, de
clock, clocks | object | Uhr, Uhren, f | horloge, horloges, f | reloj, relojes, m | orologio, orologi, m | klok, klokken, de
letter, letters | object | Brief, Briefe, m | lettre, lettres, f | carta, cartas, f | lettera, lettere, f | brief, brieven, de
knife, knives | object | Messer, Messer, n | couteau, couteaux, m | cuchillo, cuchillos, m | coltello, coltelli, m | mes, messen, het
spoon, spoons | object | Löffel, Löffel, m | cuillère, cuillères, f | cuchara, cucharas, f | cucchiaio, cucchiai, m | lepel, lepels, de
coat, coats | object | Mantel, Mäntel, m | manteau, manteaux, m | abrigo, abrigos, m | cappotto, cappotti, m | jas, jassen, de
shoe, shoes | object | Schuh, Schuhe, m | chaussure, chaussures, f | zapato, zapatos, m | scarpa, scarpe, f | schoen, schoenen, de
hat, hats | object | Hut, Hüte, m | chapeau, chapeaux, m | sombrero, sombreros, m | cappello, cappelli, m | hoed, hoeden, de
umbrella, umbrellas | object | Regenschirm, Regenschirme, m | parapluie, parapluies, m | paraguas, paraguas, m | ombrello, ombrelli, m | paraplu, paraplu's, de
computer, computers | object | Computer, Computer, m | ordinateur, ordinateurs, m | ordenador, ordenadores, m | computer, computer, m | computer, computers, de
apple, apples | object | Apfel, Äpfel, m | pomme, pommes, f | manzana, manzanas, f | mela, mele, f | appel, appels, de
mirror, mirrors | object | Spiegel, Spiegel, m | miroir, miroirs, m | espejo, espejos, m | specchio, specchi, m | spiegel, spiegels, de
backpack, backpacks | object container | Rucksack, Rucksäcke, m | sac à dos, sacs à dos, m | mochila, mochilas, f | zaino, zaini, m | rugzak, rugzakken, de
"""


@dataclass(frozen=True)
class Adjective:
    en: str
    kinds: frozenset[str]  # the noun kinds it describes sensibly
    de: tuple[str, str]  # predicative, attributive stem (teuer -> teur-)
    fr: tuple[str, ...]  # m sg, f sg, m pl, f pl, "pre"|"post" (+ m sg before a vowel)
    es: tuple[str, ...]  # m sg, f sg, m pl, f pl, copula "ser"|"estar"
    it: tuple[str, str, str, str]  # m sg, f sg, m pl, f pl
    nl: tuple[str, str]  # predicative (and after "een" with a het-word), attributive


ALL_KINDS = "animal vehicle building flower tree object"
THINGS = "vehicle building flower object"  # what colours suit (no red trees)
# English | kinds | de | fr | es | it | nl
_ADJECTIVE_TABLE = f"""
big | {ALL_KINDS} | groß, groß | grand, grande, grands, grandes, pre | grande, grande, grandes, grandes, ser | grande, grande, grandi, grandi | groot, grote
small | {ALL_KINDS} | klein, klein | petit, petite, petits, petites, pre | pequeño, pequeña, pequeños, pequeñas, ser | piccolo, piccola, piccoli, piccole | klein, kleine
old | {ALL_KINDS} | alt, alt | vieux, vieille, vieux, vieilles, pre, vieil | viejo, vieja, viejos, viejas, ser | vecchio, vecchia, vecchi, vecchie | oud, oude
new | vehicle building object | neu, neu | nouveau, nouvelle, nouveaux, nouvelles, pre, nouvel | nuevo, nueva, nuevos, nuevas, ser | nuovo, nuova, nuovi, nuove | nieuw, nieuwe
red | {THINGS} | rot, rot | rouge, rouge, rouges, rouges, post | rojo, roja, rojos, rojas, ser | rosso, rossa, rossi, rosse | rood, rode
white | {ALL_KINDS} | weiß, weiß | blanc, blanche, blancs, blanches, post | blanco, blanca, blancos, blancas, ser | bianco, bianca, bianchi, bianche | wit, witte
black | {ALL_KINDS} | schwarz, schwarz | noir, noire, noirs, noires, post | negro, negra, negros, negras, ser | nero, nera, neri, nere | zwart, zwarte
blue | {THINGS} | blau, blau | bleu, bleue, bleus, bleues, post | azul, azul, azules, azules, ser | blu, blu, blu, blu | blauw, blauwe
green | {THINGS} tree | grün, grün | vert, verte, verts, vertes, post | verde, verde, verdes, verdes, ser | verde, verde, verdi, verdi | groen, groene
yellow | {THINGS} | gelb, gelb | jaune, jaune, jaunes, jaunes, post | amarillo, amarilla, amarillos, amarillas, ser | giallo, gialla, gialli, gialle | geel, gele
fast | animal vehicle | schnell, schnell | rapide, rapide, rapides, rapides, post | rápido, rápida, rápidos, rápidas, ser | veloce, veloce, veloci, veloci | snel, snelle
expensive | animal vehicle building object | teuer, teur | cher, chère, chers, chères, post | caro, cara, caros, caras, ser | caro, cara, cari, care | duur, dure
dark | building object | dunkel, dunkl | sombre, sombre, sombres, sombres, post | oscuro, oscura, oscuros, oscuras, ser | scuro, scura, scuri, scure | donker, donkere
empty | building vehicle container vessel | leer, leer | vide, vide, vides, vides, post | vacío, vacía, vacíos, vacías, estar | vuoto, vuota, vuoti, vuote | leeg, lege
clean | animal vehicle building object | sauber, sauber | propre, propre, propres, propres, post | limpio, limpia, limpios, limpias, estar | pulito, pulita, puliti, pulite | schoon, schone
dirty | animal vehicle building object | schmutzig, schmutzig | sale, sale, sales, sales, post | sucio, sucia, sucios, sucias, estar | sporco, sporca, sporchi, sporche | vuil, vuile
heavy | animal vehicle object | schwer, schwer | lourd, lourde, lourds, lourdes, post | pesado, pesada, pesados, pesadas, ser | pesante, pesante, pesanti, pesanti | zwaar, zware
cold | building vessel | kalt, kalt | froid, froide, froids, froides, post | frío, fría, fríos, frías, estar | freddo, fredda, freddi, fredde | koud, koude
warm | building vessel | warm, warm | chaud, chaude, chauds, chaudes, post | caliente, caliente, calientes, calientes, estar | caldo, calda, caldi, calde | warm, warme
quiet | animal vehicle building | ruhig, ruhig | calme, calme, calmes, calmes, post | tranquilo, tranquila, tranquilos, tranquilas, estar | tranquillo, tranquilla, tranquilli, tranquille | rustig, rustige
"""


@dataclass(frozen=True)
class Relation:
    en: str
    gender: str  # "m" | "f": past participles agree with it (French, Italian)
    forms: dict[str, str]  # language -> the noun after "my"
    it_article: bool  # Italian kin terms take no article after "mio"; the others do


# English, gender | de | fr | es | it (a * marks "il mio"/"la mia") | nl
_RELATION_TABLE = """
brother, m | Bruder | frère | hermano | fratello | broer
sister, f | Schwester | sœur | hermana | sorella | zus
mother, f | Mutter | mère | madre | madre | moeder
father, m | Vater | père | padre | padre | vader
son, m | Sohn | fils | hijo | figlio | zoon
daughter, f | Tochter | fille | hija | figlia | dochter
uncle, m | Onkel | oncle | tío | zio | oom
aunt, f | Tante | tante | tía | zia | tante
grandmother, f | Großmutter | grand-mère | abuela | nonna | grootmoeder
grandfather, m | Großvater | grand-père | abuelo | nonno | grootvader
friend, m | Freund | ami | amigo | *amico | vriend
friend, f | Freundin | amie | amiga | *amica | vriendin
neighbor, m | Nachbar | voisin | vecino | *vicino | buurman
neighbor, f | Nachbarin | voisine | vecina | *vicina | buurvrouw
colleague, m | Kollege | collègue | colega | *collega | collega
colleague, f | Kollegin | collègue | colega | *collega | collega
"""

# Time words: English, de, fr, es, it, nl; PAST ones take the past tense.
TIMES = {
    "today": ("Today", "heute", "aujourd'hui", "hoy", "oggi", "vandaag"),
    "tomorrow": ("Tomorrow", "morgen", "demain", "mañana", "domani", "morgen"),
    "tonight": ("Tonight", "heute Abend", "ce soir", "esta noche", "stasera", "vanavond"),
    "next week": ("Next week", "nächste Woche", "la semaine prochaine", "la semana que viene",
                  "la prossima settimana", "volgende week"),
    "yesterday": ("Yesterday", "gestern", "hier", "ayer", "ieri", "gisteren"),
    "last week": ("Last week", "letzte Woche", "la semaine dernière", "la semana pasada",
                  "la settimana scorsa", "vorige week"),
    "last year": ("Last year", "letztes Jahr", "l'année dernière", "el año pasado", "l'anno scorso",
                  "vorig jaar"),
}
_DAYS = (("Monday", "Montag", "lundi", "lunes", "lunedì", "maandag"),
         ("Tuesday", "Dienstag", "mardi", "martes", "martedì", "dinsdag"),
         ("Wednesday", "Mittwoch", "mercredi", "miércoles", "mercoledì", "woensdag"),
         ("Thursday", "Donnerstag", "jeudi", "jueves", "giovedì", "donderdag"),
         ("Friday", "Freitag", "vendredi", "viernes", "venerdì", "vrijdag"),
         ("Saturday", "Samstag", "samedi", "sábado", "sabato", "zaterdag"),
         ("Sunday", "Sonntag", "dimanche", "domingo", "domenica", "zondag"))
for _en, _de, _fr, _es, _it, _nl in _DAYS:
    TIMES[f"on {_en}"] = (f"On {_en}", f"am {_de}", _fr, f"el {_es}", _it, f"op {_nl}")
PAST = ("yesterday", "last week", "last year")

# Where a person lives, works, studies or was born: English, then per language
# (verb, preposition); "born" is a past participle phrase with its own word order.
PLACE_VERBS = ("lives", "works", "studies", "born")
_PLACE_VERB_FORMS = {
    "lives": ("lives in", {"de": "wohnt in", "fr": "habite à", "es": "vive en", "it": "abita a", "nl": "woont in"}),
    "works": ("works in", {"de": "arbeitet in", "fr": "travaille à", "es": "trabaja en", "it": "lavora a", "nl": "werkt in"}),
    "studies": ("studies in", {"de": "studiert in", "fr": "étudie à", "es": "estudia en", "it": "studia a", "nl": "studeert in"}),
}


def _parse_nouns() -> dict[str, Noun]:
    out = {}
    for line in _NOUN_TABLE.strip().splitlines():
        en, kinds, *langs = [f.strip() for f in line.split("|")]
        sg, pl = [w.strip() for w in en.split(",")]
        forms = {lang: tuple(w.strip() for w in f.split(",")) for lang, f in zip(LANGUAGES, langs)}
        out[sg] = Noun((sg, pl), frozenset(kinds.split()), forms)
    return out


def _parse_adjectives() -> dict[str, Adjective]:
    out = {}
    for line in _ADJECTIVE_TABLE.strip().splitlines():
        en, kinds, *langs = [f.strip() for f in line.split("|")]
        de, fr, es, it, nl = (tuple(w.strip() for w in f.split(",")) for f in langs)
        kinds_set = set(kinds.split())
        if "object" in kinds_set:  # every vessel and container is an object
            kinds_set |= {"vessel", "container"}
        out[en] = Adjective(en, frozenset(kinds_set), de, fr, es, it, nl)
    return out


def _parse_relations() -> list[Relation]:
    out = []
    for line in _RELATION_TABLE.strip().splitlines():
        en, *langs = [f.strip() for f in line.split("|")]
        word, gender = [w.strip() for w in en.split(",")]
        forms = dict(zip(LANGUAGES, langs))
        it_article = forms["it"].startswith("*")
        forms["it"] = forms["it"].lstrip("*")
        out.append(Relation(word, gender, forms, it_article))
    return out


NOUNS = _parse_nouns()
ADJECTIVES = _parse_adjectives()
RELATIONS = _parse_relations()


# --- grammar --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    """A subject: a first name (with its gender), or "my <relation>"."""

    name: str | None = None
    gender: str = "f"
    relation: Relation | None = None


@dataclass(frozen=True)
class Choice:
    """Everything a template needs; unused fields are ignored."""

    noun: str = "dog"
    adjective: str | None = None
    plural: bool = False
    number: int = 2
    person: Person = Person(name="Anna")
    city: str = "Berlin"
    time: str = "tomorrow"
    verb: str = "lives"


_FR_VOWEL = "aeiouyàâéèêëîïôûüh"  # every h-word in the lexicon is h muet (l'hôtel, l'horloge)


def _fr_elides(word: str) -> bool:
    return word[:1].lower() in _FR_VOWEL


def _it_onset(word: str) -> str:
    """Italian article class of a word: "vowel" (l'), "s" (lo: s+consonant, z, gn, ps, x, y)
    or "plain" (il)."""
    w = word.lower()
    if w[:1] in "aeiouh":
        return "vowel"
    if (w[:1] == "s" and w[1:2] not in "aeiou") or w[:1] in "zxy" or w[:2] in ("gn", "ps", "pn"):
        return "s"
    return "plain"


def _agree(forms: tuple[str, ...], gender: str, plural: bool) -> str:
    """The m sg, f sg, m pl, f pl form that agrees with a Romance noun."""
    return forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


def noun_phrase(lang: str, noun: Noun | str, adj: Adjective | str | None = None, plural: bool = False,
                article: str = "def", case: str = "nom", number: int | None = None) -> str:
    """A noun phrase: ``article`` "def" (the), "indef" (a; singular) or "none" (a bare
    plural, with ``number`` in words before it); ``case`` "nom" or "acc" (German articles and
    endings, the Spanish personal "a" before an animal object)."""
    noun = NOUNS[noun] if isinstance(noun, str) else noun
    adj = ADJECTIVES[adj] if isinstance(adj, str) else adj
    num = number_words(lang, number) if number is not None else None
    if lang == "en":
        word = noun.en[1] if plural else noun.en[0]
        words = [adj.en, word] if adj else [word]
        if article == "def":
            return " ".join(["the"] + words)
        if article == "indef":
            return " ".join(["an" if words[0][0] in "aeiou" else "a"] + words)
        return " ".join(([num] if num else []) + words)
    sg, pl, g = noun.forms[lang]
    word = pl if plural else sg
    if lang == "de":
        if article == "def":
            art = "die" if plural else {"m": "den" if case == "acc" else "der", "f": "die", "n": "das"}[g]
            # weak endings after der/die/das: -en in the plural and the masculine accusative
            end = "en" if plural or (g == "m" and case == "acc") else "e"
        elif article == "indef":
            art = {"m": "einen" if case == "acc" else "ein", "f": "eine", "n": "ein"}[g]
            # mixed endings after ein/eine: the adjective shows the gender ein- does not
            end = {"m": "en" if case == "acc" else "er", "f": "e", "n": "es"}[g]
        else:
            art, end = num, "e"  # strong plural endings without an article
        parts = [art] + ([adj.de[1] + end] if adj else []) + [word]
    elif lang == "nl":
        if article == "def":
            art = "de" if plural or g == "de" else "het"
            form = adj.nl[1] if adj else None
        elif article == "indef":
            art = "een"
            # "een groot huis": no -e on an adjective after "een" with a het-word
            form = (adj.nl[0] if g == "het" else adj.nl[1]) if adj else None
        else:
            art, form = num, adj.nl[1] if adj else None
        parts = [art] + ([form] if form else []) + [word]
    elif lang == "fr":
        pre = post = None
        if adj:
            form = _agree(adj.fr, g, plural)
            if adj.fr[4] == "pre":
                # vieil, nouvel before a masculine singular noun that starts with a vowel
                if not plural and g == "m" and len(adj.fr) > 5 and _fr_elides(word):
                    form = adj.fr[5]
                pre = form
            else:
                post = form
        head = " ".join(w for w in (pre, word) if w)
        if article == "def":
            art = "les" if plural else ("l'" if _fr_elides(head) else ("la" if g == "f" else "le"))
        elif article == "indef":
            art = "une" if g == "f" else "un"
        else:
            art = num
        phrase = (art + head) if art == "l'" else f"{art} {head}"
        return phrase + (f" {post}" if post else "")
    elif lang == "es":
        art = {"def": {(False, "m"): "el", (False, "f"): "la", (True, "m"): "los", (True, "f"): "las"}[(plural, g)],
               "indef": "una" if g == "f" else "un", "none": num}[article]
        parts = [art, word] + ([_agree(adj.es, g, plural)] if adj else [])
        if case == "acc" and "animal" in noun.kinds and article == "def":
            # the personal "a" before a particular animal as object: "veo al perro"
            return "al " + " ".join(parts[1:]) if art == "el" else "a " + " ".join(parts)
    elif lang == "it":
        onset = _it_onset(word)  # adjectives follow the noun: the article looks at the noun
        if article == "def":
            if g == "f":
                art = "le" if plural else ("l'" if onset == "vowel" else "la")
            elif plural:
                art = "i" if onset == "plain" else "gli"
            else:
                art = {"vowel": "l'", "s": "lo", "plain": "il"}[onset]
        elif article == "indef":
            art = ("un'" if onset == "vowel" else "una") if g == "f" else ("uno" if onset == "s" else "un")
        else:
            art = num
        phrase = (art + word) if art.endswith("'") else f"{art} {word}"
        return phrase + (f" {_agree(adj.it, g, plural)}" if adj else "")
    else:
        raise ValueError(f"no grammar for language {lang!r}")
    return " ".join(p for p in parts if p)


# "is"/"are" per language; Spanish chooses between ser and estar by the adjective
_BE = {"en": ("is", "are"), "de": ("ist", "sind"), "fr": ("est", "sont"), "it": ("è", "sono"),
       "nl": ("is", "zijn"), "es": ("es", "son"), "es-estar": ("está", "están")}


def predicate(lang: str, noun: Noun | str, adj: Adjective | str, plural: bool) -> str:
    """"is big" / "ist groß" / "est grand" / "es grande" or "está vacía" / "è grande" / "is groot"."""
    noun = NOUNS[noun] if isinstance(noun, str) else noun
    adj = ADJECTIVES[adj] if isinstance(adj, str) else adj
    g = noun.forms[lang][2] if lang != "en" else "m"
    if lang in ("en", "de", "nl"):  # predicative adjectives do not agree
        form = {"en": adj.en, "de": adj.de[0], "nl": adj.nl[0]}[lang]
    else:
        form = _agree(getattr(adj, lang), g, plural)
    be = "es-estar" if lang == "es" and adj.es[4] == "estar" else lang
    return f"{_BE[be][plural]} {form}"


def subject(lang: str, person: Person) -> str:
    if person.relation is None:
        return person.name
    rel = person.relation
    if lang == "en":
        return f"my {rel.en}"
    word = rel.forms[lang]
    if lang == "de":
        return f"{'meine' if rel.gender == 'f' else 'mein'} {word}"
    if lang == "fr":
        # "mon amie": mon before a vowel, whatever the gender
        return f"{'ma' if rel.gender == 'f' and not _fr_elides(word) else 'mon'} {word}"
    if lang == "es":
        return f"mi {word}"
    if lang == "it":
        poss = "mia" if rel.gender == "f" else "mio"
        return f"{('la' if rel.gender == 'f' else 'il')} {poss} {word}" if rel.it_article else f"{poss} {word}"
    return f"mijn {word}"


def gender_of(person: Person) -> str:
    return person.relation.gender if person.relation else person.gender


def number_words(lang: str, n: int) -> str:
    return num2words(n, lang=lang)


def _it_a(city: str) -> str:
    return f"ad {city}" if city[:1].lower() == "a" else f"a {city}"  # euphonic d before a-


def _time(lang: str, key: str) -> str:
    return TIMES[key][0 if lang == "en" else LANGUAGES.index(lang) + 1]


def _written(lang: str, words: str, question: bool = False) -> str:
    s = written_sentence(words, question=question)
    return "¿" + s if lang == "es" and question else s  # Spanish opens a question too


# --- templates --------------------------------------------------------------------------------

def _t_predicative(lang: str, c: Choice) -> str:
    """The dog is big. / The dogs are big."""
    return _written(lang, f"{noun_phrase(lang, c.noun, plural=c.plural)} {predicate(lang, c.noun, c.adjective, c.plural)}")


def _t_see(lang: str, c: Choice) -> str:
    """I see the (big) dog(s)."""
    obj = noun_phrase(lang, c.noun, c.adjective, c.plural, case="acc")
    verb = {"en": "I see", "de": "ich sehe", "fr": "je vois", "es": "veo", "it": "vedo", "nl": "ik zie"}[lang]
    return _written(lang, f"{verb} {obj}")


def _t_have(lang: str, c: Choice) -> str:
    """We have three (big) dogs."""
    obj = noun_phrase(lang, c.noun, c.adjective, plural=True, article="none", number=c.number)
    verb = {"en": "we have", "de": "wir haben", "fr": "nous avons", "es": "tenemos", "it": "abbiamo",
            "nl": "we hebben"}[lang]
    return _written(lang, f"{verb} {obj}")


def _t_has_a(lang: str, c: Choice) -> str:
    """Anna has a (big) dog."""
    obj = noun_phrase(lang, c.noun, c.adjective, article="indef", case="acc")
    verb = {"en": "has", "de": "hat", "fr": "a", "es": "tiene", "it": "ha", "nl": "heeft"}[lang]
    return _written(lang, f"{subject(lang, c.person)} {verb} {obj}")


def _t_where(lang: str, c: Choice) -> str:
    """Where is the (big) dog? / Where are the dogs?"""
    np = noun_phrase(lang, c.noun, c.adjective, c.plural)
    if lang == "it" and not c.plural:
        return _written(lang, f"dov'è {np}", question=True)  # "dove è" elides
    where = {"en": "where", "de": "wo", "fr": "où", "es": "dónde", "it": "dove", "nl": "waar"}[lang]
    be = _BE["es-estar" if lang == "es" else lang][c.plural]  # where something is: estar
    return _written(lang, f"{where} {be} {np}", question=True)


def _t_is_it(lang: str, c: Choice) -> str:
    """Is the dog big? / Are the dogs big?"""
    np = noun_phrase(lang, c.noun, plural=c.plural)
    pred = predicate(lang, c.noun, c.adjective, c.plural)
    verb, rest = pred.split(" ", 1)
    if lang in ("en", "de", "nl"):  # the verb first
        words = f"{verb} {np} {rest}"
    elif lang == "fr":
        words = f"est-ce que {np} {pred}"  # "que" never elides here: the article follows
    else:  # Spanish and Italian ask with the statement's order
        words = f"{np} {pred}"
    return _written(lang, words, question=True)


def _t_place(lang: str, c: Choice) -> str:
    """My sister lives in <city>. / Anna was born in <city>."""
    subj, city, g = subject(lang, c.person), c.city, gender_of(c.person)
    if c.verb == "born":
        words = {"en": f"{subj} was born in {city}", "de": f"{subj} ist in {city} geboren",
                 "fr": f"{subj} est {'née' if g == 'f' else 'né'} à {city}", "es": f"{subj} nació en {city}",
                 "it": f"{subj} è {'nata' if g == 'f' else 'nato'} {_it_a(city)}",
                 "nl": f"{subj} is in {city} geboren"}[lang]
    else:
        en, forms = _PLACE_VERB_FORMS[c.verb]
        if lang == "en":
            words = f"{subj} {en} {city}"
        elif lang == "it":
            words = f"{subj} {forms['it'][:-2]} {_it_a(city)}"
        else:
            words = f"{subj} {forms[lang]} {city}"
    return _written(lang, words)


def _t_travel(lang: str, c: Choice) -> str:
    """Tomorrow Anna goes to <city>. / Yesterday Anna went to <city>. German and Dutch put
    the finite verb second: "Morgen fährt Anna nach Berlin.\""""
    subj, city, g = subject(lang, c.person), c.city, gender_of(c.person)
    t, past = _time(lang, c.time), c.time in PAST
    words = {
        "en": f"{t} {subj} {'went' if past else 'goes'} to {city}",
        "de": f"{t} ist {subj} nach {city} gefahren" if past else f"{t} fährt {subj} nach {city}",
        # a fronted time phrase takes a comma in French
        "fr": f"{t}, {subj} {('est allée' if g == 'f' else 'est allé') if past else 'va'} à {city}",
        "es": f"{t} {subj} {'fue' if past else 'va'} a {city}",
        "it": f"{t} {subj} {('è andata' if g == 'f' else 'è andato') if past else 'va'} {_it_a(city)}",
        "nl": f"{t} {'ging' if past else 'gaat'} {subj} naar {city}",
    }[lang]
    return _written(lang, words)


# name -> (render, noun kinds it takes, needs an adjective)
TEMPLATES = {
    "predicative": (_t_predicative, frozenset(ALL_KINDS.split()), True),
    "see": (_t_see, frozenset(ALL_KINDS.split()), False),
    "have": (_t_have, frozenset({"animal", "vehicle", "object", "flower", "tree"}), False),
    "has_a": (_t_has_a, frozenset({"animal", "vehicle", "object"}), False),
    "where": (_t_where, frozenset(ALL_KINDS.split()), False),
    "is_it": (_t_is_it, frozenset(ALL_KINDS.split()), True),
    "place": (_t_place, frozenset(), False),
    "travel": (_t_travel, frozenset(), False),
}


def render(template: str, lang: str, choice: Choice) -> str:
    """One template in written form: ``lang`` one of LANGUAGES, or "en" for its English."""
    return TEMPLATES[template][0](lang, choice)


# --- code-switching -----------------------------------------------------------------------------

# English frames; {0} and {1} are nouns (singular unless the slot says "pl"), {rel} a relation;
# each slot names the noun kinds (or nouns) that fit it.
CODESWITCH_FRAMES = (
    ("I left my {0} in the {1}.", ("object", "building vehicle")),
    ("Can you bring the {0} to the {1}?", ("object animal", "building")),
    ("The {0} is next to the {1}.", ("object animal vehicle", "object building")),
    ("My {rel} bought a new {0} yesterday.", ("object vehicle",)),
    ("We saw three {0:pl} near the {1}.", ("animal vehicle", "building tree")),
    ("Where did you put the {0}?", ("object",)),
    ("There are two {0:pl} in the {1}.", ("object animal", "building vehicle container")),
    ("Please put the {0} on the {1}.", ("object", "table chair box")),
)


def foreign_noun(lang: str, noun: Noun | str, plural: bool = False) -> str:
    """The bare noun as written in ``lang`` (German nouns keep their capital)."""
    noun = NOUNS[noun] if isinstance(noun, str) else noun
    return noun.forms[lang][1 if plural else 0]


def render_codeswitch(frame: int, nouns: list[str], swap: list[bool], lang: str,
                      relation: str = "sister") -> tuple[str, str]:
    """(mixed, English) of one frame: the nouns whose ``swap`` is true in ``lang``."""
    text = CODESWITCH_FRAMES[frame][0]
    mixed, english = text, text
    for i, (key, swapped) in enumerate(zip(nouns, swap)):
        for slot, plural in ((f"{{{i}:pl}}", True), (f"{{{i}}}", False)):
            en = NOUNS[key].en[1 if plural else 0]
            english = english.replace(slot, en)
            mixed = mixed.replace(slot, foreign_noun(lang, key, plural) if swapped else en)
    return mixed.replace("{rel}", relation), english.replace("{rel}", relation)


# --- the source -------------------------------------------------------------------------------

_CITY = re.compile(r"[^\W\d_]+(?:[ -][^\W\d_]+)*")
_GLUED = re.compile(r"[^\W\d_A-ZÀ-Þ][A-ZÀ-Þ]")  # "LacombeVille": two words run together
# Cities that begin with an article contract with the preposition ("au Havre", "al Escorial"):
# left out rather than contracted.
_ARTICLE_START = {"fr": ("Le ", "Les "), "es": ("El ",), "it": ("Il ", "Lo ", "La ", "Le ", "I ", "Gli ")}


# Faker capitalises the particles inside Italian names ("Aiello Del Friuli"); the towns write
# them in lower case.
_IT_PARTICLES = {"Di", "Del", "Della", "Dei", "Delle", "Degli", "Sul", "Sulla", "Al", "In", "Nel", "Con"}


def _city(lang: str, city: str) -> str:
    if lang == "it":
        words = city.split(" ")
        city = " ".join([words[0]] + [w.lower() if w in _IT_PARTICLES else w for w in words[1:]])
    return city


def _good_city(lang: str, city: str) -> bool:
    if not _CITY.fullmatch(city) or _GLUED.search(city) or city.startswith(_ARTICLE_START.get(lang, ())):
        return False
    # a capitalised word of one or two letters is a disambiguation ("Elst Ut") or a
    # capitalised particle ("Pasian Di Prato"), except an article a city starts with
    words = re.split(r"[ -]", city)
    return all(len(w) > 2 or not w[0].isupper() or (i == 0 and w in ("La", "De", "Le", "Den"))
               for i, w in enumerate(words))


_NAME = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)?")


class ParallelSource:
    """Deterministic parallel sentences and code-switched English from a seed."""

    def __init__(self, seed: int, languages=LANGUAGES):
        self.rng = random.Random(seed * 41 + 11)
        self.languages = tuple(languages)
        self.cities: dict[str, list[str]] = {}
        self.names: dict[str, list[tuple[str, str]]] = {}
        for i, lang in enumerate(self.languages):
            f = Faker(LOCALES[lang])
            f.seed_instance(seed * 43 + i)
            for provider in f.providers:
                # Faker's it_IT builds its city list from a set: its order (so what a seed
                # draws) changed with PYTHONHASHSEED
                if isinstance(getattr(provider, "cities", None), list):
                    provider.cities = sorted(provider.cities)
            self.cities[lang] = sorted({c for c in (_city(lang, f.city()) for _ in range(300)) if _good_city(lang, c)})
            names = {(n, "m") for n in (f.first_name_male() for _ in range(150)) if _NAME.fullmatch(n)}
            names |= {(n, "f") for n in (f.first_name_female() for _ in range(150)) if _NAME.fullmatch(n)}
            self.names[lang] = sorted(names)

    def _person(self, lang: str) -> Person:
        if self.rng.random() < 0.5:
            return Person(relation=self.rng.choice(RELATIONS))
        name, gender = self.rng.choice(self.names[lang])
        return Person(name=name, gender=gender)

    def _number(self) -> int:
        # 21, 31, ... are left out: "veintiún perros", "ventun cani" agree with the noun
        return self.rng.choice([n for n in range(2, 100) if n <= 20 or n % 10 != 1])

    def choice(self, template: str, lang: str) -> Choice:
        _, kinds, needs_adj = TEMPLATES[template]
        r = self.rng
        nouns = sorted(k for k, n in NOUNS.items() if n.kinds & kinds) if kinds else ["dog"]
        noun = r.choice(nouns)
        adjs = sorted(a for a, adj in ADJECTIVES.items() if adj.kinds & NOUNS[noun].kinds)
        adjective = r.choice(adjs) if needs_adj or r.random() < 0.6 else None
        return Choice(noun=noun, adjective=adjective, plural=r.random() < 0.35, number=self._number(),
                      person=self._person(lang), city=r.choice(self.cities[lang]),
                      time=r.choice(sorted(TIMES)), verb=r.choice(PLACE_VERBS))

    def parallel(self, lang: str | None = None) -> Utterance:
        """A sentence in ``lang`` (default: drawn) with its English translation."""
        lang = lang or self.rng.choice(self.languages)
        template = self.rng.choice(sorted(TEMPLATES))
        c = self.choice(template, lang)
        return Utterance(text=render(template, lang, c), language=lang, kind="parallel",
                         translation=render(template, "en", c))

    def codeswitch(self, lang: str | None = None) -> Utterance:
        """English with one or two nouns in ``lang``: the mixed text is spoken, the English
        text is its translation, ``codeswitch_language`` the swapped words' language."""
        r = self.rng
        lang = lang or r.choice(self.languages)
        frame = r.randrange(len(CODESWITCH_FRAMES))
        slots = CODESWITCH_FRAMES[frame][1]
        nouns: list[str] = []
        for kinds in slots:
            fits = set(kinds.split())
            # only nouns written differently in the two languages ("hotel" is no switch)
            pool = sorted(k for k, n in NOUNS.items() if (n.kinds & fits or k in fits) and k not in nouns
                          and foreign_noun(lang, k) != k)
            nouns.append(r.choice(pool))
        swap = [True] * len(nouns)
        if len(nouns) == 2 and r.random() < 0.6:  # often only one of the two
            swap[r.randrange(2)] = False
        rel = r.choice(RELATIONS).en
        mixed, english = render_codeswitch(frame, nouns, swap, lang, rel)
        return Utterance(text=mixed, language="en", kind="codeswitch", translation=english,
                         codeswitch_language=lang)
