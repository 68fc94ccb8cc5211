"""Seed 001's option lists and what each choice means to the pipeline."""

from __future__ import annotations

TOPICS = ("scary", "mystery", "bedtime", "interesting history", "urban legends",
          "motivational", "fun facts", "long form jokes", "life pro tips", "philosophy",
          "love", "custom topic")
CUSTOM = "custom topic"

# The art style goes first in every scene's image prompt, so a text encoder with a short
# window keeps it when the scene text is cut.
ART_STYLES = {
    "photorealistic": "photorealistic photograph, natural light, sharp detail",
    "cinematic": "cinematic film still, dramatic lighting, wide shot",
    "anime": "anime illustration, cel shading, vivid colours",
    "comic-book": "comic book panel, bold ink lines, halftone shading",
    "pixar-art": "3D animated film render, soft lighting, expressive characters",
}

# Scenes (one image and one narrated paragraph each) and sentences per scene.
DURATIONS = {"short": (4, 2), "long": (10, 3)}

# Narration language -> espeak-ng voice (the language code it speaks).
LANGUAGES = {
    "english": "en", "czech": "cs", "danish": "da", "dutch": "nl", "french": "fr",
    "german": "de", "greek": "el", "hindi": "hi", "indonesian": "id", "italian": "it",
    "chinese": "cmn", "japanese": "ja", "norwegian": "nb", "polish": "pl",
    "portuguese": "pt", "russian": "ru", "spanish": "es", "swedish": "sv",
    "turkish": "tr", "ukrainian": "uk",
}


class Voice:
    """A seed voice name as espeak-ng renders it: a variant, words a minute and pitch."""

    def __init__(self, variant: str, speed: int, pitch: int):
        self.variant, self.speed, self.pitch = variant, speed, pitch


VOICES = {
    "alloy": Voice("m3", 170, 50),
    "echo": Voice("m1", 160, 40),
    "fable": Voice("m5", 165, 60),
    "onyx": Voice("m7", 150, 30),
    "nova": Voice("f2", 175, 60),
    "shimmer": Voice("f4", 180, 70),
}
