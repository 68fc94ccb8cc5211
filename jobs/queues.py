"""How queues and per-job Redis keys are named: plain functions with no RQ import, so an
action can name its queue without dragging the engine, RQ and webhooks in with it."""

from __future__ import annotations


def queue_name(config, queue: str) -> str:
    """The RQ queue behind a logical queue (``cpu``, ``gpu.<model>``, ``webhooks``)."""
    return f"{config.redis_prefix}:{queue}"


def gpu_queue(model_id: str) -> str:
    """Generation jobs queue per model, so queue lengths are per model (``/getQueuesLength``)
    and a GPU worker can batch the requests waiting for the model it has loaded."""
    return f"gpu.{model_id}"


def expand_queues(names, models) -> list[str]:
    """``gpu`` stands for every model's queue (and the plain one)."""
    out = []
    for name in (n.strip() for n in names):
        if name == "gpu":
            out += [gpu_queue(m.id) for m in models] + ["gpu"]
        elif name:
            out.append(name)
    return list(dict.fromkeys(out))


def cancel_flag(prefix, uid) -> str:
    """The Redis flag that tells a running job's checkpoints it was cancelled."""
    return f"{prefix}:cancel:{uid}"
