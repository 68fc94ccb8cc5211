"""The model catalogue: which generative models this deployment offers and their limits.

Models are declared by the operator in a JSON file (``MODELS_FILE``, default
``DATA_DIR/models.json`` when it exists), one object per model::

    {"models": [{"id": "sd15", "name": "Stable Diffusion 1.5", "path": "/srv/models/sd15",
                 "kind": "text-to-image", "defaultSteps": 25, "maxSteps": 50,
                 "allowedWidths": [512, 640, 768], "allowedHeights": [512, 640, 768],
                 "maxResolution": 589824, "defaultResolution": [512, 512],
                 "samplers": ["DPM++ 2M Karras", "Euler a"], "priceFactor": 1.0}]}

This module is plain data (no torch): the gateway validates requests against these limits
and prices them before anything is charged, and ``/getModels`` lists them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from core.errors import InvalidRequest

KINDS = ("text-to-image", "image-to-image", "inpainting")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")

# AIMG sampler names (seed 003) -> (diffusers scheduler class, extra config). The Karras
# variants are the same solver with Karras sigmas, as in the A1111 web UI.
SAMPLERS = {
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DDIM": ("DDIMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SAMPLER = "DPM++ 2M Karras"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    path: str
    kind: str = "text-to-image"
    description: str = ""
    default_steps: int = 20
    min_steps: int = 1
    max_steps: int = 50
    allowed_widths: tuple = (512,)
    allowed_heights: tuple = (512,)
    max_resolution: int = 512 * 512
    default_resolution: tuple = (512, 512)
    samplers: tuple = (DEFAULT_SAMPLER,)
    default_sampler: str = DEFAULT_SAMPLER
    min_cfg: float = 1.0
    max_cfg: float = 12.0
    default_cfg: float = 7.0
    max_batch: int = 4
    max_frames: int = 16
    price_factor: float = 1.0
    supports_variations: bool = True
    positive_tokens: tuple = ()
    negative_tokens: tuple = ()
    min_tier: int = 0

    def check_size(self, width, height) -> list[dict]:
        problems = []
        if width not in self.allowed_widths:
            problems.append({"field": "width", "problem": "must be one of "
                             + ", ".join(map(str, self.allowed_widths)) + f" for {self.id}"})
        if height not in self.allowed_heights:
            problems.append({"field": "height", "problem": "must be one of "
                             + ", ".join(map(str, self.allowed_heights)) + f" for {self.id}"})
        if not problems and width * height > self.max_resolution:
            problems.append({"field": "width", "problem": f"width x height must be at most "
                             f"{self.max_resolution} pixels for {self.id}"})
        return problems

    def describe(self) -> dict:
        """The Model object of seed 003 (``/getModels``)."""
        return {
            "modelID": self.id, "name": self.name, "description": self.description,
            "kind": self.kind, "mediaType": "StaticImage", "minTier": self.min_tier,
            "tier0Concurrent": 1, "tier1Concurrent": 2, "tier2Concurrent": 4,
            "positiveTokens": list(self.positive_tokens),
            "negativeTokens": list(self.negative_tokens), "sampleImages": [],
            "minSteps": self.min_steps, "maxSteps": self.max_steps,
            "defaultSteps": self.default_steps,
            "allowedWidths": list(self.allowed_widths),
            "allowedHeights": list(self.allowed_heights),
            "maxResolution": self.max_resolution,
            "defaultResolution": list(self.default_resolution),
            "allowedSamplers": list(self.samplers), "defaultSampler": self.default_sampler,
            "minCfgScale": self.min_cfg, "maxCfgScale": self.max_cfg,
            "maxBatchSize": self.max_batch, "maxFrames": self.max_frames,
            "priceFactor": self.price_factor,
            "supportsVariations": self.supports_variations, "registrationWall": True,
            "defaultFaceFix": False, "supportsFaceFix": False,
        }


_KEYS = {  # JSON name -> dataclass field
    "id": "id", "name": "name", "path": "path", "kind": "kind", "description": "description",
    "defaultSteps": "default_steps", "minSteps": "min_steps", "maxSteps": "max_steps",
    "allowedWidths": "allowed_widths", "allowedHeights": "allowed_heights",
    "maxResolution": "max_resolution", "defaultResolution": "default_resolution",
    "samplers": "samplers", "defaultSampler": "default_sampler", "minCfgScale": "min_cfg",
    "maxCfgScale": "max_cfg", "defaultCfgScale": "default_cfg", "maxBatchSize": "max_batch",
    "maxFrames": "max_frames", "priceFactor": "price_factor",
    "supportsVariations": "supports_variations", "positiveTokens": "positive_tokens",
    "negativeTokens": "negative_tokens", "minTier": "min_tier",
}


class CatalogueError(ValueError):
    """The operator's model file is wrong; raised at start-up, never per request."""


def _spec(raw: dict, base: Path) -> ModelSpec:
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise CatalogueError(f"unknown model keys: {', '.join(sorted(unknown))}")
    values = {_KEYS[k]: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    for required in ("id", "path"):
        if not values.get(required):
            raise CatalogueError(f"a model needs {required!r}")
    if not MODEL_ID.match(values["id"]):
        raise CatalogueError(f"model id {values['id']!r} must match {MODEL_ID.pattern}")
    values.setdefault("name", values["id"])
    path = Path(values["path"]).expanduser()
    values["path"] = str(path if path.is_absolute() else (base / path).resolve())
    spec = ModelSpec(**values)
    if spec.kind not in KINDS:
        raise CatalogueError(f"model {spec.id}: kind must be one of {', '.join(KINDS)}")
    bad = [s for s in spec.samplers if s not in SAMPLERS]
    if bad or spec.default_sampler not in spec.samplers:
        raise CatalogueError(f"model {spec.id}: samplers must be among {', '.join(SAMPLERS)} "
                             "and include the default sampler")
    if any(v % 8 for v in spec.allowed_widths + spec.allowed_heights):
        raise CatalogueError(f"model {spec.id}: widths and heights must be multiples of 8")
    if not (1 <= spec.min_steps <= spec.default_steps <= spec.max_steps):
        raise CatalogueError(f"model {spec.id}: need 1 <= minSteps <= defaultSteps <= maxSteps")
    if spec.check_size(*spec.default_resolution):
        raise CatalogueError(f"model {spec.id}: defaultResolution is outside its own limits")
    return spec


class Catalogue:
    """The configured models, in the operator's order (``/getModels`` keeps it)."""

    def __init__(self, models=(), source: str | None = None):
        self._models = {m.id: m for m in models}
        self.source = source
        if len(self._models) != len(models):
            raise CatalogueError("model ids must be unique")

    @classmethod
    def from_file(cls, path) -> Catalogue:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CatalogueError(f"cannot read the model file {path}: {exc}") from None
        items = raw.get("models") if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            raise CatalogueError(f"{path}: expected {{\"models\": [...]}}")
        return cls([_spec(item, path.parent) for item in items], source=str(path))

    @classmethod
    def from_config(cls, config) -> Catalogue:
        path = config.models_file or Path(config.data_dir) / "models.json"
        if not config.models_file and not Path(path).exists():
            return cls()
        return cls.from_file(path)

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self):
        return len(self._models)

    def __bool__(self):
        return bool(self._models)

    def find(self, model_id) -> ModelSpec | None:
        return self._models.get(model_id)

    def get(self, model_id, field="modelName") -> ModelSpec:
        """The model by id, or ``None`` for the default (the first one), or INVALID_REQUEST."""
        if model_id is None:
            if not self._models:
                raise InvalidRequest(
                    "No generation models are configured on this gateway",
                    details=[{"field": field, "problem": "no models configured"}])
            return next(iter(self._models.values()))
        spec = self._models.get(model_id)
        if spec is None:
            known = ", ".join(self._models) or "none configured"
            raise InvalidRequest(f"{field}: unknown model {model_id!r}",
                                 details=[{"field": field,
                                           "problem": f"must be one of: {known}"}])
        return spec

    def to_json(self) -> list[dict]:
        return [m.describe() for m in self]
