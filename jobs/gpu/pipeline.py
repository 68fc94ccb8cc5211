"""The one small interface between actions and diffusers: a request in, images out.

``generate_images`` runs text-to-image (or image-to-image / inpainting when given an init
image) for a batch; ``generate_frames`` makes a short clip by image-to-image chaining from
a first frame. Both report each denoising step through ``on_step`` (which is where a job
is cancelled or expires) and turn library failures into errors with a public code.

Noise is drawn on the CPU from per-image generators seeded ``seed + i`` (and mixed with
``subseed + i`` by ``subseed_strength``, as in the A1111 web UI), then moved to the device:
the same seed gives the same picture on every run on one device.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from jobs.gpu.catalogue import SAMPLERS
from jobs.gpu.loader import is_out_of_memory

log = logging.getLogger(__name__)


class GenerationFailed(Exception):
    """The pipeline failed; ``code`` is what the caller sees on the failed composition."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    prompt: str
    width: int
    height: int
    steps: int
    seed: int
    negative_prompt: str = ""
    cfg_scale: float = 7.0
    sampler: str = "DPM++ 2M Karras"
    subseed: int | None = None
    subseed_strength: float = 0.0
    batch: int = 1

    def batch_key(self, model_id) -> tuple:
        """Requests with the same key can share one pipeline call."""
        return (model_id, self.width, self.height, self.steps, self.sampler, self.cfg_scale)


def _scheduler(pipe, sampler):
    import diffusers

    class_name, extra = SAMPLERS[sampler]
    return getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)


def _slerp(t, low, high):
    import torch

    low_n, high_n = low / low.norm(), high / high.norm()
    omega = torch.acos((low_n * high_n).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * low + t * high
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * low + (torch.sin(t * omega) / so) * high


def initial_noise(pipe, req: ImageRequest, device, dtype, offset=0):
    """One latent per image, from ``seed + i`` (and ``subseed + i``), drawn on the CPU."""
    import torch

    scale = getattr(pipe, "vae_scale_factor", 8)
    shape = (pipe.unet.config.in_channels, req.height // scale, req.width // scale)
    latents = []
    for i in range(offset, offset + req.batch):
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(req.seed + i))
        if req.subseed is not None and req.subseed_strength > 0:
            sub = torch.randn(shape,
                              generator=torch.Generator("cpu").manual_seed(req.subseed + i))
            noise = _slerp(req.subseed_strength, noise, sub)
        latents.append(noise)
    return torch.stack(latents).to(device=device, dtype=dtype)


def _generators(device, seeds):
    import torch

    # Per-step noise of ancestral samplers comes from these; a CPU generator works for
    # any device and keeps the draw identical to a CPU run.
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _run(cache, call: Callable):
    """Run one pipeline call on the device, turning failures into public codes.

    After an out-of-memory error the failed call's tensors are released (outside the
    handler, whose traceback still holds them) and other resident models are unloaded,
    so the worker goes on to its next job.
    """
    from jobs.interrupts import JobCancelled, JobExpired

    with cache.run_lock:
        try:
            return call()
        except (JobCancelled, JobExpired):
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                log.exception("pipeline failed")
                raise GenerationFailed("GENERATION_FAILED",
                                       "The model failed while generating") from None
            log.error("out of memory on %s: %s", cache.device, exc)
        cache.after_out_of_memory()
        raise GenerationFailed("OUT_OF_MEMORY", "The generation ran out of memory on the "
                               "worker; try a smaller size or batch")


def generate_images(cache, spec, requests: list[ImageRequest], on_step=None, *,
                    init_image=None, mask_image=None, strength=0.75):
    """Images for one or more requests sharing a ``batch_key``, in request order.

    ``on_step(done, total)`` is called after every denoising step.
    """
    task = "inpainting" if mask_image is not None else (
        "image-to-image" if init_image is not None else "text-to-image")
    pipe = cache.get(spec, task)
    first = requests[0]
    prompts, negatives, latents, seeds = [], [], [], []
    for req in requests:
        prompts += [req.prompt] * req.batch
        negatives += [req.negative_prompt or ""] * req.batch
        seeds += [req.seed + i for i in range(req.batch)]
        if init_image is None:
            latents.append(initial_noise(pipe, req, cache.device, cache.dtype))
    kwargs = dict(prompt=prompts, negative_prompt=negatives, num_inference_steps=first.steps,
                  guidance_scale=first.cfg_scale, generator=_generators(cache.device, seeds),
                  output_type="pil")
    total = first.steps
    if init_image is None:
        import torch

        kwargs.update(height=first.height, width=first.width, latents=torch.cat(latents))
    else:
        kwargs.update(image=[init_image] * len(prompts), strength=strength)
        if mask_image is not None:
            kwargs.update(mask_image=[mask_image] * len(prompts), height=first.height,
                          width=first.width)
        total = max(1, int(first.steps * strength))

    def step(pipe_, index, _timestep, tensors):
        # Some samplers (Heun, PNDM) run more iterations than ``steps``: count those.
        if on_step is not None:
            on_step(index + 1, max(total, getattr(pipe_, "num_timesteps", 0) or 0))
        return tensors

    kwargs["callback_on_step_end"] = step
    pipe.scheduler = _scheduler(pipe, first.sampler)
    images = _run(cache, lambda: pipe(**kwargs).images)
    out, at = [], 0
    for req in requests:
        out.append(images[at:at + req.batch])
        at += req.batch
    return out


def generate_frames(cache, spec, req: ImageRequest, frames: int, on_step=None, *,
                    strength=0.45):
    """A clip of ``frames`` images: a text-to-image first frame, then each frame is the
    previous one re-denoised at ``strength`` with seed ``seed + n``, so motion stays
    coherent while the picture evolves."""
    per_frame_i2i = max(1, int(req.steps * strength))
    total = req.steps + per_frame_i2i * (frames - 1)
    done = 0

    def progress(step, _n):
        if on_step is not None:
            on_step(done + step, total)

    one = dataclasses.replace(req, batch=1)
    out = generate_images(cache, spec, [one], progress)[0]
    done += req.steps
    for n in range(1, frames):
        nxt = dataclasses.replace(one, seed=req.seed + n)
        out += generate_images(cache, spec, [nxt], progress, init_image=out[-1],
                               strength=strength)[0]
        done += per_frame_i2i
    return out


def truncated_words(pipe_tokenizer, prompt: str) -> str:
    """The prompt's words past the text encoder's window: the model never sees them."""
    limit = getattr(pipe_tokenizer, "model_max_length", 77) - 2
    words, kept = prompt.split(), 0
    for i in range(len(words)):
        if len(pipe_tokenizer.tokenize(" ".join(words[: i + 1]))) > limit:
            break
        kept = i + 1
    return " ".join(words[kept:])
