"""Loading diffusers pipelines once per worker process, on the right device and dtype.

A pipeline is loaded from the model's local directory with ``from_pretrained(dir,
local_files_only=True)``: a worker never reaches the network for weights. Loaded pipelines
are kept in a small LRU cache (``GPU_MAX_MODELS``), since a full-size model is gigabytes of
GPU memory; image-to-image and inpainting pipelines are derived from a loaded one with
``from_pipe`` and share its weights.

``GPU_MEMORY_LIMIT_MB`` caps what a worker may use beyond its loaded models: on CUDA via
``torch.cuda.set_per_process_memory_fraction``, on the CPU by lowering the process's
address-space limit (``RLIMIT_AS``), re-measured after each load. A generation that needs
more then fails with a real allocation error (``OUT_OF_MEMORY``) instead of pushing the
machine into swap or the kernel's OOM killer.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
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


class OutOfMemory(Exception):
    """The device ran out of memory while loading a model."""

    code = "OUT_OF_MEMORY"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA OOM, or the CPU allocator's failure (``can't allocate memory``)."""
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text)


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None where unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PipelineCache:
    """Pipelines by (model id, task), at most ``max_models`` base models resident."""

    def __init__(self, device: str = "auto", max_models: int = 1, memory_limit_mb: int = 0):
        self.device, self.dtype = pick_device(device)
        self.memory_limit_mb = max(0, int(memory_limit_mb or 0))
        self._saved_rlimit = None
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
        self._lift_memory_limit()  # loading is bounded by the device, not the work limit
        pipe, out_of_memory = None, False
        try:
            pipe = DiffusionPipeline.from_pretrained(spec.path, local_files_only=True,
                                                     dtype=self.dtype)
            pipe = pipe.to(self.device)
        except Exception as exc:
            if not is_out_of_memory(exc):
                self._apply_memory_limit()
                log.exception("loading model %s from %s failed", spec.id, spec.path)
                raise ModelUnavailable(f"Model {spec.id} could not be loaded") from exc
            log.error("out of memory loading model %s on %s: %s", spec.id, self.device, exc)
            pipe, out_of_memory = None, True
        if out_of_memory:  # outside the handler, so the failed load's frames are gone
            self._after_oom(keep=None)
            self._apply_memory_limit()
            raise OutOfMemory(f"Model {spec.id} does not fit in this worker's memory")
        self._apply_memory_limit()
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

    def after_out_of_memory(self):
        """After an OOM in a run: free what the failed run held and unload every model but
        the one that just ran (the most recently used), so the next job has room."""
        with self._lock:
            self._after_oom(keep=next(reversed(self._base), None))

    def _after_oom(self, keep):
        for model_id in [m for m in self._base if m != keep]:
            del self._base[model_id]
            for key in [k for k in self._derived if k[0] == model_id]:
                del self._derived[key]
            log.warning("unloaded model %s after running out of memory", model_id)
        free_memory()

    def _lift_memory_limit(self):
        if not self.memory_limit_mb:
            return
        if self.device.type == "cuda":
            import torch

            torch.cuda.set_per_process_memory_fraction(1.0, self.device)
        elif self._saved_rlimit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, self._saved_rlimit)

    def _apply_memory_limit(self):
        """Allow ``memory_limit_mb`` beyond what the process holds now (models loaded)."""
        if not self.memory_limit_mb:
            return
        extra = self.memory_limit_mb * 2**20
        if self.device.type == "cuda":
            import torch

            total = torch.cuda.get_device_properties(self.device).total_memory
            held = torch.cuda.memory_reserved(self.device)
            torch.cuda.set_per_process_memory_fraction(min(1.0, (held + extra) / total),
                                                       self.device)
            log.warning("memory limit on %s: %d MiB in use + %d MiB", self.device,
                        held >> 20, self.memory_limit_mb)
            return
        import resource

        held = _address_space()
        if held is None:
            log.warning("GPU_MEMORY_LIMIT_MB is ignored: no /proc/self/status here")
            return
        if self._saved_rlimit is None:
            self._saved_rlimit = resource.getrlimit(resource.RLIMIT_AS)
        hard = self._saved_rlimit[1]
        soft = held + extra if hard == resource.RLIM_INFINITY else min(hard, held + extra)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        log.warning("memory limit on the cpu: %d MiB address space in use + %d MiB",
                    held >> 20, self.memory_limit_mb)


def free_memory():
    """Collect garbage, return CUDA's cached blocks, and hand glibc's free heap pages back
    to the system (freed tensors otherwise stay in the process's heap)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
