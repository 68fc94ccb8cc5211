"""Built-in sample prompts (seed 003 ``Prompt`` objects) for ``GET /getSamplePrompts``.

Plain data: a front-end shows them as ideas, or picks one at random with ``randomOne``.
"""

from __future__ import annotations

import secrets

_COMMON_NEGATIVE = "blurry, low quality, jpeg artifacts, watermark, text, signature"

SAMPLE_PROMPTS: tuple[dict, ...] = tuple({"positivePrompt": p, "negativePrompt": n} for p, n in (
    ("a red vintage bicycle leaning against a whitewashed wall by the sea, morning light, "
     "35mm photograph", _COMMON_NEGATIVE),
    ("a cozy reading nook with a window seat, rain on the glass, warm lamp light, "
     "detailed interior photography", _COMMON_NEGATIVE + ", people"),
    ("a lighthouse on a rocky cliff during a storm, dramatic clouds, crashing waves, "
     "oil painting", _COMMON_NEGATIVE),
    ("a steaming cup of coffee on a wooden table, latte art, shallow depth of field, "
     "product photography", _COMMON_NEGATIVE + ", cluttered background"),
    ("a snowy mountain village at dusk, glowing windows, pine forest, cinematic wide shot",
     _COMMON_NEGATIVE),
    ("a friendly robot watering plants in a greenhouse, soft pastel colours, "
     "children's book illustration", _COMMON_NEGATIVE + ", scary, dark"),
    ("an astronaut floating above the Earth, sunrise over the horizon, highly detailed, "
     "digital art", _COMMON_NEGATIVE + ", deformed hands"),
    ("a bowl of fresh fruit on a marble counter, natural window light, still life "
     "photograph", _COMMON_NEGATIVE),
    ("a koi pond in a Japanese garden in autumn, red maple leaves on the water, "
     "watercolor", _COMMON_NEGATIVE),
    ("a futuristic city street at night, neon signs reflected in puddles, cyberpunk, "
     "ultra detailed", _COMMON_NEGATIVE + ", daylight"),
    ("a portrait of an old fisherman with a weathered face, knitted hat, golden hour, "
     "85mm photograph", _COMMON_NEGATIVE + ", deformed, extra fingers, cartoon"),
    ("a field of sunflowers under a blue sky with fluffy clouds, impressionist painting",
     _COMMON_NEGATIVE),
    ("a sleeping fox curled up in fresh snow, wildlife photography, soft focus background",
     _COMMON_NEGATIVE + ", cartoon"),
    ("an isometric miniature bakery with tiny loaves in the window, 3d render, "
     "soft lighting", _COMMON_NEGATIVE),
))


def sample_prompts() -> list[dict]:
    """Every built-in sample prompt, in a stable order (copies: callers may change them)."""
    return [dict(p) for p in SAMPLE_PROMPTS]


def random_prompt() -> dict:
    """One sample prompt, chosen at random."""
    return dict(secrets.choice(SAMPLE_PROMPTS))
