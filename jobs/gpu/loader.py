"""Loading diffusers pipelines once per worker process, on the right device and dtype.

A pipeline is loaded from the model's local directory with ``from_pretrained(dir,
local_files_only=True)``: a worker never reaches the network for weights. Loaded pipelines
are kept in a small LRU cache (``GPU_MAX_MODELS``), since a full-size model is gigabytes of
GPU memory; image-to-image and inpainting pipelines are derived from a loaded one with
``from_pipe`` and share its weights.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

# Quiet the libraries' download and progress chatter: a worker has no network and no tty.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class ModelUnavailable(Exception):
    """The model's directory is missing or does not hold a loadable pipeline."""

    code = "MODEL_UNAVAILABLE"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def _quiet_libraries():
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def pick_device(preference: str = "auto"):
    """``auto``: the first CUDA device when there is one, else the CPU.

    CUDA runs fp16 (half the memory, tensor cores); the CPU runs fp32, since fp16 matmuls
    on the CPU are slow or unsupported.
    """
    import torch

    preference = (preference or "auto").lower()
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


class PipelineCache:
    """Pipelines by (model id, task), at most ``max_models`` base models resident."""

    def __init__(self, device: str = "auto", max_models: int = 1):
        self.device, self.dtype = pick_device(device)
        _quiet_libraries()
        self.max_models = max(1, max_models)
        self._base: collections.OrderedDict = collections.OrderedDict()
        self._derived: dict = {}
        self._lock = threading.Lock()
        # One pipeline execution at a time on a device: concurrent runs on one GPU only
        # thrash its memory; throughput comes from batching instead.
        self.run_lock = threading.Lock()
        self.loaded: list[dict] = []  # what this process loaded, for logs and reports

    def describe(self) -> dict:
        return {"device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "models": list(self._base)}

    def get(self, spec, task: str = "text-to-image"):
        with self._lock:
            base = self._base.get(spec.id)
            if base is None:
                base = self._load(spec)
            else:
                self._base.move_to_end(spec.id)
            if task == "text-to-image" and spec.kind == "text-to-image":
                return base
            key = (spec.id, task)
            if key not in self._derived:
                self._derived[key] = self._derive(base, task)
            return self._derived[key]

    def _load(self, spec):
        from diffusers import DiffusionPipeline

        if not os.path.isfile(os.path.join(spec.path, "model_index.json")):
            raise ModelUnavailable(f"Model {spec.id} is not installed on this worker")
        while len(self._base) >= self.max_models:
            self._evict()
        started = time.monotonic()
        try:
            pipe = DiffusionPipeline.from_pretrained(spec.path, local_files_only=True,
                                                     dtype=self.dtype)
        except Exception as exc:
            log.exception("loading model %s from %s failed", spec.id, spec.path)
            raise ModelUnavailable(f"Model {spec.id} could not be loaded") from exc
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        self._base[spec.id] = pipe
        info = {"model": spec.id, "class": type(pipe).__name__, "path": spec.path,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "seconds": round(time.monotonic() - started, 3)}
        self.loaded.append(info)
        log.warning("loaded model %(model)s (%(class)s) on %(device)s %(dtype)s in "
                    "%(seconds)ss from %(path)s", info)
        return pipe

    def _derive(self, base, task):
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        maker = {"image-to-image": AutoPipelineForImage2Image,
                 "inpainting": AutoPipelineForInpainting}.get(task)
        if maker is None:
            return base
        pipe = maker.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _evict(self):
        model_id, _ = self._base.popitem(last=False)
        for key in [k for k in self._derived if k[0] == model_id]:
            del self._derived[key]
        free_memory()
        log.warning("unloaded model %s to make room", model_id)

    def clear(self):
        with self._lock:
            self._base.clear()
            self._derived.clear()
            free_memory()


def free_memory():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
