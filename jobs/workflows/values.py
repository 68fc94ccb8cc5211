"""Values that pass between nodes and how they are stored.

In a node's ``run``: ``text`` is a str, ``number`` an int or float, ``image`` a PIL image,
``images`` a list of PIL images, ``video`` a :class:`Video`. Between nodes (NodeRun and
NodeCache rows, events, the run's outputs) binary values are refs to files in storage,
never blobs: ``{"type": "image", "url", "uid", "name", "format": "png", "width",
"height"}``, ``{"type": "images", "items": [image refs]}``, ``{"type": "video", "url",
"uid", "name", "format", "width", "height", "fps", "frameCount"}``; text and numbers are
``{"type": "text"|"number", "value": ...}``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Video:
    data: bytes
    format: str  # mp4 | webp
    width: int
    height: int
    fps: int
    frame_count: int
