"""Where each scene sits in the video, the narration track, and the subtitles.

Every scene's slot is its narration plus a short pause, rounded up to whole video frames,
and the narration track is padded with silence to the same slots, so picture, sound and
subtitle cues share one clock: a scene's cues start when its narration starts and end
when it stops, and the video lasts exactly the sum of the slots.
"""

from __future__ import annotations

import dataclasses
import math

from actions.story.speech import Speech
from actions.story.writer import sentences

FPS = 10
PAUSE_MS = 400  # silence after each scene's narration
LINE = 42  # characters per subtitle line


@dataclasses.dataclass(frozen=True)
class Slot:
    start_ms: int
    speech_ms: int
    end_ms: int  # the next scene starts here

    @property
    def frames(self) -> int:
        return (self.end_ms - self.start_ms) * FPS // 1000


def slots(speeches: list[Speech]) -> list[Slot]:
    frame_ms = 1000 // FPS
    out, start = [], 0
    for speech in speeches:
        length = math.ceil((speech.duration_ms + PAUSE_MS) / frame_ms) * frame_ms
        out.append(Slot(start, speech.duration_ms, start + length))
        start += length
    return out


def narration_track(speeches: list[Speech], timeline: list[Slot]) -> Speech:
    """One track: each scene's speech, then silence to the end of its slot."""
    rate = speeches[0].rate
    if any(s.rate != rate for s in speeches):
        raise ValueError("narration rates differ between scenes")
    parts = []
    for speech, slot in zip(speeches, timeline, strict=True):
        samples = (slot.end_ms - slot.start_ms) * rate // 1000
        parts.append(speech.pcm[:2 * samples].ljust(2 * samples, b"\0"))
    return Speech(b"".join(parts), rate)


@dataclasses.dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


def cues(text: str, slot: Slot) -> list[Cue]:
    """A scene's cues: one a sentence, sharing the narration's time by sentence length."""
    found = sentences(text) or [text]
    total = sum(len(s) for s in found)
    out, at = [], slot.start_ms
    for n, sentence in enumerate(found):
        end = (slot.start_ms + slot.speech_ms if n == len(found) - 1
               else at + slot.speech_ms * len(sentence) // total)
        out.append(Cue(at, end, _wrap(sentence)))
        at = end
    return out


def _wrap(text: str) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > LINE:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def _stamp(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def vtt_cues(items: list[Cue]) -> str:
    return "\n\n".join(f"{_stamp(c.start_ms, '.')} --> {_stamp(c.end_ms, '.')}\n{c.text}"
                       for c in items)


def vtt(items: list[Cue]) -> str:
    return f"WEBVTT\n\n{vtt_cues(items)}\n"


def srt(items: list[Cue]) -> str:
    return "\n\n".join(f"{n}\n{_stamp(c.start_ms, ',')} --> {_stamp(c.end_ms, ',')}\n{c.text}"
                       for n, c in enumerate(items, 1)) + "\n"
