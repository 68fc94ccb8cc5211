"""Narration backends: text in, 16-bit mono PCM out, offline.

The default is ``espeak-ng`` (Debian package; ``STORY_ESPEAK_BIN``), with the seed's voice
names mapped to espeak variants, speeds and pitches and its languages to espeak voices
(``actions.story.options``). A better engine plugs in through ``STORY_TTS_BACKEND=
package.module:factory``: ``factory(config)`` returns an object with ``name`` and
``synthesize(text, language, voice_name) -> Speech``.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import subprocess
import tempfile
import wave

from actions.story.options import LANGUAGES, VOICES
from actions.story.writer import StoryFailed

SPEAK_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Speech:
    pcm: bytes  # signed 16-bit little-endian mono samples
    rate: int  # samples a second

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // (2 * self.rate)


def read_wav(data: bytes) -> Speech:
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise StoryFailed("NARRATION_FAILED", "The narration is not 16-bit mono audio")
        return Speech(wav.readframes(wav.getnframes()), wav.getframerate())


def wav_bytes(speech: Speech) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(speech.rate)
        wav.writeframes(speech.pcm)
    return buffer.getvalue()


class EspeakBackend:
    """``espeak-ng`` as a subprocess: the text on stdin (never on the command line, so no
    text can become an option), a WAV file out."""

    name = "espeak-ng"

    def __init__(self, binary: str = "espeak-ng"):
        self.binary = binary

    def synthesize(self, text: str, language: str, voice_name: str) -> Speech:
        voice = VOICES[voice_name]
        with tempfile.TemporaryDirectory(prefix="gw-speech-") as folder:
            out = os.path.join(folder, "speech.wav")
            command = [self.binary, "-v", f"{LANGUAGES[language]}+{voice.variant}",
                       "-s", str(voice.speed), "-p", str(voice.pitch), "-b", "1",
                       "-w", out, "--stdin"]
            try:
                done = subprocess.run(command, input=text.encode(), capture_output=True,
                                      timeout=SPEAK_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StoryFailed("NARRATION_FAILED",
                                  f"The narration engine could not run ({type(exc).__name__})"
                                  ) from None
            if done.returncode != 0 or not os.path.exists(out):
                raise StoryFailed("NARRATION_FAILED",
                                  f"The narration engine failed (exit {done.returncode})")
            with open(out, "rb") as handle:
                speech = read_wav(handle.read())
        if not speech.pcm:
            raise StoryFailed("NARRATION_FAILED", "The narration engine produced no audio")
        return speech


def backend_for(config):
    """The configured narration backend (``STORY_TTS_BACKEND``)."""
    name = config.story_tts_backend
    if name in ("espeak", "espeak-ng"):
        return EspeakBackend(config.story_espeak_bin)
    module, _, factory = name.partition(":")
    return getattr(importlib.import_module(module), factory or "backend")(config)
