"""Captions, referring expressions and FIND-Bench entries from an image record.

All text is built from the record's categories, colours and image-space layout, so every colour
word and spatial relation is true of the rendered pixels. ``Sentence`` tracks character offsets as
phrases are appended, which is what guarantees ``sentence[start:end] == phrase`` in FIND-Bench files.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from find3d.data.engine.catalog import category_by_id

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class Sentence:
    """A sentence assembled from plain text and grounded phrases, keeping exact offsets."""

    text: str = ""
    phrases: list[dict[str, Any]] = field(default_factory=list)

    def add(self, text: str) -> Sentence:
        self.text += text
        return self

    def phrase(self, text: str, segment_id: int) -> Sentence:
        start = len(self.text)
        self.text += text
        end = len(self.text)
        self.phrases.append({"phrase": text, "start_idx": start, "end_idx": end, "annotation_id": segment_id})
        return self


def tokens(sentence: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", sentence.lower())


def name(segment: dict) -> str:
    return category_by_id(segment["category_id"]).name


def noun(segment: dict, article: str = "a") -> str:
    """'a red mug', 'the table'. Stuff has no colour attribute; 'a' becomes 'an' before a vowel."""
    words = f"{segment['colour']} {name(segment)}" if segment["colour"] else name(segment)
    if not segment["isthing"]:
        article = "the"
    if article == "a" and words[0] in "aeiou":
        article = "an"
    return f"{article} {words}"


def relation(a: dict, b: dict, width: int) -> str:
    """Where ``a`` is relative to ``b`` in the image: left/right when clearly apart, else by depth."""
    dx = a["centroid"][0] - b["centroid"][0]
    if abs(dx) > 0.08 * width:
        return "to the left of" if dx < 0 else "to the right of"
    return "in front of" if a["depth"] < b["depth"] else "behind"


def things(record: dict) -> list[dict]:
    return [s for s in record["segments"] if s["isthing"]]


def stuff(record: dict, category: str) -> dict | None:
    return next((s for s in record["segments"] if not s["isthing"] and name(s) == category), None)


def captions(record: dict, rng: np.random.Generator, count: int = 5) -> list[str]:
    """Several different true captions (attributes, counts and spatial relations)."""
    items = things(record)
    if not items:
        return ["An empty table in a room."]
    order = [items[i] for i in rng.permutation(len(items))]
    a, b = order[0], order[-1]
    listed = _join([noun(s) for s in sorted(items, key=lambda s: s["centroid"][0])])
    out = [
        f"A table with {listed}.",
        f"{_cap(noun(a))} on a table, seen from above.",
        f"{_cap(NUMBERS[min(len(items), 9)])} object{'s' if len(items) > 1 else ''} on a table, including {noun(b)}.",
    ]
    if len(order) > 1:
        out.append(f"{_cap(noun(a))} {relation(a, b, record['width'])} {noun(b)}.")
        out.append(f"{_cap(noun(b, 'the'))} is {relation(b, a, record['width'])} {noun(a, 'the')} on the table.")
    else:
        out.append(f"A single {name(a)} standing on a table.")
    return out[:count]


def referring_expressions(record: dict) -> dict[int, list[str]]:
    """For every thing, expressions that single it out among the image's things."""
    items = things(record)
    out: dict[int, list[str]] = {}
    for segment in items:
        base = _unique_description(segment, items)
        sentences = [base]
        others = [s for s in items if s["category_id"] != segment["category_id"]]
        if others:
            nearest = min(others, key=lambda s: np.hypot(*np.subtract(s["centroid"], segment["centroid"])))
            sentences.append(f"{base} {relation(segment, nearest, record['width'])} {noun(nearest, 'the')}")
        out[segment["id"]] = sentences
    return out


def _unique_description(segment: dict, items: list[dict]) -> str:
    same_category = [s for s in items if s["category_id"] == segment["category_id"]]
    if len(same_category) == 1:
        return noun(segment, "the")
    same_look = sorted((s for s in same_category if s["colour"] == segment["colour"]), key=lambda s: s["centroid"][0])
    if len(same_look) == 1:
        return noun(segment, "the")
    rank = same_look.index(segment)
    where = "leftmost" if rank == 0 else "rightmost" if rank == len(same_look) - 1 else "middle"
    return f"the {where} {segment['colour']} {name(segment)}"


def entity_entry(record: dict, rng: np.random.Generator) -> Sentence:
    """One sentence with several grounded phrases: things, their relations and the table."""
    items = [things(record)[i] for i in rng.permutation(len(things(record)))][:3]
    sentence = Sentence()
    if not items:
        table = stuff(record, "table")
        sentence.add("Nothing stands on ")
        return _ground_or_text(sentence, table, "the table").add(".")
    sentence.phrase(_cap(noun(items[0])), items[0]["id"])
    for previous, segment in itertools.pairwise(items):
        sentence.add(f" is {relation(previous, segment, record['width'])} ").phrase(noun(segment), segment["id"])
        if segment is not items[-1]:
            sentence.add(", which")
    sentence.add(" on ")
    return _ground_or_text(sentence, stuff(record, "table"), "the table").add(".")


def paragraph_entry(record: dict, rng: np.random.Generator) -> Sentence:
    """Several sentences, each grounding one or two segments."""
    items = [things(record)[i] for i in rng.permutation(len(things(record)))][:4]
    paragraph = Sentence()
    table, wall = stuff(record, "table"), stuff(record, "wall")
    paragraph.add("This is a tabletop scene. ")
    if table is not None:
        paragraph.phrase("The table", table["id"]).add(f" holds {NUMBERS[min(len(things(record)), 9)]} objects.")
    for index, segment in enumerate(items):
        paragraph.add(" ").phrase(_cap(noun(segment)), segment["id"])
        if index == 0:
            paragraph.add(" stands out.")
        else:
            other = items[index - 1]
            paragraph.add(f" is {relation(segment, other, record['width'])} ").phrase(noun(other, "the"), other["id"])
            paragraph.add(".")
    if wall is not None:
        paragraph.add(" Behind everything is ").phrase("the wall", wall["id"]).add(".")
    return paragraph


def _ground_or_text(sentence: Sentence, segment: dict | None, text: str) -> Sentence:
    return sentence.phrase(text, segment["id"]) if segment is not None else sentence.add(text)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
