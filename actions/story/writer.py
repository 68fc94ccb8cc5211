"""Story writers: a brief in, a titled story out, then split into scenes.

``TemplateWriter`` (the default) needs no model: the same brief and seed always give the
same story, so tests and previews are exact. ``TransformersWriter`` runs a local causal
language model through ``transformers`` when ``STORY_WRITER_MODEL`` names its folder;
it never downloads anything. Both return plain text that ``split_scenes`` cuts into the
scenes the video shows, one image and one narrated paragraph each.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import threading
import unicodedata


class StoryFailed(Exception):
    """A pipeline stage could not do its part: the task fails with ``code`` and
    ``message`` (what the caller reads as ``error_message``) and is refunded."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


@dataclasses.dataclass(frozen=True)
class Brief:
    topic: str
    custom_topic: str
    language: str
    scenes: int
    sentences: int  # per scene
    seed: int

    @property
    def subject(self) -> str:
        return self.custom_topic or self.topic


@dataclasses.dataclass(frozen=True)
class Written:
    title: str
    description: str
    text: str


# --- the template writer ---------------------------------------------------------------

HEROES = ("Mara", "Theo", "Ines", "Jonas", "Lena", "Felix", "Ada", "Rafael", "Nora", "Omar")
PLACES = (("a lighthouse on the northern coast", "the coast"),
          ("a quiet mountain village", "the village"),
          ("an old library in the city", "the city"),
          ("a farmhouse at the edge of the forest", "the valley"),
          ("a harbour town full of fishing boats", "the harbour"),
          ("a desert station by the railway", "the station"))
THEMES = {
    "scary": ("the thing that knocked at night", "dread", "a cold whisper"),
    "mystery": ("the missing key", "suspicion", "a coded letter"),
    "bedtime": ("the sleepy moon", "calm", "a soft lullaby"),
    "interesting history": ("the forgotten map", "wonder", "a faded chronicle"),
    "urban legends": ("the figure on the old bridge", "rumour", "a story told in whispers"),
    "motivational": ("the long climb", "resolve", "a promise made at dawn"),
    "fun facts": ("the curious notebook", "delight", "a surprising discovery"),
    "long form jokes": ("the talking parrot", "mischief", "a punchline nobody expected"),
    "life pro tips": ("the tidy workshop", "clarity", "a simple habit"),
    "philosophy": ("the question at the crossroads", "reflection", "an old teacher's riddle"),
    "love": ("the letter under the door", "longing", "a shared umbrella"),
}
BEATS = (
    ("{hero} lived in {place}, where people still spoke of {thing}.",
     "Every evening brought a feeling of {mood} that no one could explain.",
     "It began, as such things do, on an ordinary day."),
    ("One morning {hero} found {clue} tucked behind a loose stone.",
     "It was older than anyone in {short} could remember.",
     "The first line was clear enough to read aloud."),
    ("{hero} asked the neighbours, but each gave a different answer.",
     "Some laughed, some looked away, and one simply closed the shutters.",
     "The {mood} grew with every question."),
    ("That night the wind carried a sound from the far end of {short}.",
     "{hero} followed it with a lantern and a steady breath.",
     "The path was longer than it looked by day."),
    ("At the end of the path stood a door nobody had noticed before.",
     "{hero} remembered {clue} and what it had promised.",
     "With one push, the door swung open."),
    ("Inside, everything was exactly as the old stories said.",
     "Yet one detail was different, and it changed everything.",
     "{hero} finally understood {thing}."),
    ("The next day {hero} told everyone in {short} what had been found.",
     "Some believed at once, others needed to see it for themselves.",
     "Either way, nobody spoke of {thing} in the same voice again."),
    ("Weeks passed, and {place} slowly changed.",
     "Children invented new games around {clue}.",
     "The old {mood} gave way to something warmer."),
    ("{hero} kept {clue} on a shelf by the window.",
     "On quiet evenings it still seemed to hum.",
     "A reminder that the world is larger than it looks."),
    ("And so the story of {thing} was told once more.",
     "Now it is yours to keep, or to pass on.",
     "Sleep well, and listen for the wind."),
)


class TemplateWriter:
    """A deterministic story from fixed templates: no model, the same brief -> the same
    story. English text (the narration voice still speaks the brief's language)."""

    name = "template"

    def write(self, brief: Brief) -> Written:
        rng = random.Random(f"{brief.seed}:{brief.subject}")
        thing, mood, clue = THEMES.get(brief.topic, (f"the tale of {brief.subject}",
                                                     "curiosity", "a strange clue"))
        hero, (place, short) = rng.choice(HEROES), rng.choice(PLACES)
        words = {"hero": hero, "place": place, "short": short,
                 "thing": thing, "mood": mood, "clue": clue}
        # spread the arc's beats over the scenes: first and last always kept
        picks = [round(i * (len(BEATS) - 1) / max(1, brief.scenes - 1))
                 for i in range(brief.scenes)]
        paragraphs = [" ".join(s.format(**words) for s in BEATS[b][:brief.sentences])
                      for b in picks]
        title = f"{hero} and {thing}"
        description = (f"A {brief.subject} story about {hero}, set in {place}, "
                       f"in {brief.scenes} scenes.")
        return Written(title=title, description=description, text="\n\n".join(paragraphs))


# --- the transformers writer -------------------------------------------------------------


class TransformersWriter:
    """A local causal language model (``transformers``), loaded once per process from a
    folder; generation is seeded, so one brief and seed give one story per model."""

    name = "transformers"

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._loaded = None

    def _load(self):
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True)
                model.eval()
                self._loaded = tokenizer, model
            return self._loaded

    def write(self, brief: Brief) -> Written:
        import torch

        tokenizer, model = self._load()
        prompt = (f"Write a {brief.subject} story in {brief.language}, "
                  f"{brief.scenes * brief.sentences} sentences long.\nStory:")
        inputs = tokenizer(prompt, return_tensors="pt")
        torch.manual_seed(brief.seed)
        budget = 40 * brief.scenes * brief.sentences
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, top_p=0.9, max_new_tokens=budget,
                                 pad_token_id=tokenizer.eos_token_id)
        text = clean(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:],
                                      skip_special_tokens=True))
        title = (sentences(text) or [brief.subject])[0][:80].rstrip(".!? ")
        return Written(title=title or brief.subject.title(),
                       description=f"A {brief.subject} story, written by a local model.",
                       text=text)


@functools.lru_cache(maxsize=4)
def _transformers(path):
    return TransformersWriter(path)


def writer_for(config):
    """The configured writer: the local model at ``STORY_WRITER_MODEL``, else templates."""
    if config.story_writer_model:
        return _transformers(config.story_writer_model)
    return TemplateWriter()


# --- scene split -------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")


def clean(text: str) -> str:
    """Printable text only (a model may emit control characters), whitespace folded."""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return re.sub(r"[ \t\r\f\v]+", " ", kept).strip()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(clean(text)) if len(s.strip(" .!?")) >= 2]


def split_scenes(text: str, count: int) -> list[str]:
    """``count`` consecutive groups of whole sentences, as even as the text allows; a text
    with fewer sentences than scenes (a small model's run-on prose) is cut by words."""
    found = sentences(text)
    if len(found) < count:
        found = clean(text).split()
        if len(found) < 2 * count:
            raise StoryFailed("STORY_TOO_SHORT",
                              f"The story writer produced {len(found)} words; {count} "
                              f"scenes need at least {2 * count}")
    bounds = [round(i * len(found) / count) for i in range(count + 1)]
    return [" ".join(found[bounds[i]:bounds[i + 1]]) for i in range(count)]
