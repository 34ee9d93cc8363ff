"""`polyhead data stats`: what a corpus holds, per set."""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet

from .corpus import available_sets, load_set


def set_stats(cuts: CutSet) -> dict:
    """Hours, speakers, sessions, languages, intents and distinct words of one set."""
    seconds, speakers, sessions, langs, intents, words = 0.0, set(), set(), {}, {}, set()
    n_utts = 0
    for cut in cuts:
        seconds += cut.duration
        for sup in cut.supervisions:
            n_utts += 1
            speakers.add(sup.speaker)
            custom = sup.custom or {}
            if custom.get("session"):
                sessions.add(custom["session"])
            if sup.language:
                langs[sup.language] = langs.get(sup.language, 0) + 1
            if custom.get("intent"):
                intents[custom["intent"]] = intents.get(custom["intent"], 0) + 1
            if sup.text:
                words.update(sup.text.lower().split())
    return {"recordings": len(cuts), "utterances": n_utts, "hours": round(seconds / 3600, 3),
            "speakers": len(speakers - {None}), "sessions": len(sessions),
            "languages": dict(sorted(langs.items())), "intents": len(intents),
            "distinct_words": len(words)}


def corpus_stats(corpus_dir: str | Path) -> dict[str, dict]:
    return {name: set_stats(load_set(corpus_dir, name)) for name in available_sets(corpus_dir)}


def format_stats(stats: dict[str, dict]) -> str:
    cols = ["recordings", "utterances", "hours", "speakers", "sessions", "intents", "distinct_words"]
    lines = ["| set | " + " | ".join(cols) + " | languages |", "|---" * (len(cols) + 2) + "|"]
    for name, s in stats.items():
        langs = ", ".join(f"{k}:{v}" for k, v in s["languages"].items())
        lines.append(f"| {name} | " + " | ".join(str(s[c]) for c in cols) + f" | {langs} |")
    return "\n".join(lines)
