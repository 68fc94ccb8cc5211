"""Image generation: what the gateway's HTTP + RQ path costs against diffusers called directly.

Run from the repository root: ``make bench-gen`` or ``.venv/bin/python bench/gen_bench.py
[--device auto] [--configs tiny-64,tiny-128] [--images N] [--full]``. See the "Generation"
section of bench/README.md.

For each configuration (model, size, steps), side by side in one run:
  (a) direct: the pipeline called in a loop in this process through the production loader
      (``PipelineCache`` + ``generate_images``, same device and dtype as the worker), one
      image per call, seeds ``1000 + i``; images/s = N / the loop's wall time;
  (b) gateway: N ``POST /zapier/v1/generate-image?wait=0`` (same prompt, size, steps,
      sampler, seeds) submitted by a few client threads, run by ONE ``gateway worker
      --queues gpu`` process; images/s = N / (last ``finished_at`` - the first submit).
It prints both, per-job latency (p50/p99), the ratio b/a and the overhead 1 - b/a.

The default configurations use the tiny random-weight pipeline of jobs/gpu/tiny.py;
``--full`` adds a full-size Stable Diffusion 1.5-shaped pipeline with random weights built
here (the same UNet, VAE and text-encoder shapes as SD 1.5: the same compute per step).

The script creates its own PostgreSQL database, Redis key prefix, temporary directory
(models, models.json, outputs, logs), a gunicorn (gateway/gunicorn_conf.py) and the worker,
and removes all of them at the end, also on error, Ctrl-C or SIGTERM. Everything listens
and connects on 127.0.0.1 only, and every wait is bounded (--timeout seconds per phase).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project packages must win over anything in bench/ on the import path.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jobs_bench  # noqa: E402  (bench/jobs_bench.py: processes, submitting, polling, cleanup)
import run as sync_bench  # noqa: E402  (bench/run.py: database, gunicorn and admin helpers)

LOOPBACK = sync_bench.LOOPBACK
REDIS_URL = sync_bench.REDIS_URL
PATH = "/zapier/v1/generate-image?wait=0"
PROMPT = "a red bicycle leaning on a blue wall at sunset, photograph"
SEED0 = 1000  # measured images use seeds SEED0 + i in both runs
WARM_SEED0 = 900_000  # warm-up images
TINY_ID, SD15_ID = "tiny", "sd15"

# name -> (model, width, height, steps, default images on cpu, default images on cuda)
CONFIGS = {
    "tiny-64": (TINY_ID, 64, 64, 4, 30, 200),
    "tiny-128": (TINY_ID, 128, 128, 20, 10, 100),
    # The tiny VAE downsamples by 2 only: 256x256 runs its UNet on a 128x128 latent (and its
    # VAE attention over 16,384 positions), about 40 s an image on 2 CPU cores.
    "tiny-256": (TINY_ID, 256, 256, 30, 3, 60),
    "sd15-512": (SD15_ID, 512, 512, 20, 2, 20),
    "sd15-1024": (SD15_ID, 1024, 1024, 20, 1, 8),
}
DEFAULT_CONFIGS = ("tiny-64", "tiny-128", "tiny-256")


# --------------------------------------------------------------------------- models

def build_sd15(directory, *, seed: int = 0) -> Path:
    """A Stable Diffusion 1.5-shaped pipeline with random weights, saved in fp16.

    UNet, VAE and CLIP text encoder have SD 1.5's configuration (so a step costs what SD 1.5
    costs); the tokenizer is the character-level one of the tiny pipeline with the text
    encoder's vocabulary sized to it. Random weights: the pictures are noise, the work is
    real. About 2 GB on disk; the loader converts to the worker's dtype.
    """
    import torch

    from jobs.gpu.tiny import save_random_pipeline

    return save_random_pipeline(
        directory, seed=seed, dtype=torch.float16,
        unet=dict(sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                  cross_attention_dim=768, attention_head_dim=8,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                    "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                  "CrossAttnUpBlock2D")),
        vae=dict(layers_per_block=2, block_out_channels=(128, 256, 512, 512), sample_size=512,
                 down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                  num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
                  projection_dim=768))


def sd15_entry(directory) -> dict:
    return {"id": SD15_ID, "name": "SD 1.5-shaped, random weights (benchmark)",
            "path": str(directory), "kind": "text-to-image", "defaultSteps": 20,
            "minSteps": 1, "maxSteps": 50, "allowedWidths": [512, 768, 1024],
            "allowedHeights": [512, 768, 1024], "maxResolution": 1024 * 1024,
            "defaultResolution": [512, 512], "samplers": ["DPM++ 2M Karras"],
            "defaultSampler": "DPM++ 2M Karras", "maxBatchSize": 4}


def write_models(tmpdir, wanted: set[str]) -> Path:
    """Build the models the chosen configurations need; return the models.json path."""
    from jobs.gpu.catalogue import Catalogue
    from jobs.gpu.tiny import catalogue_entry, make_tiny

    entries = []
    if TINY_ID in wanted:
        entries.append(catalogue_entry(TINY_ID, make_tiny(Path(tmpdir) / "models" / TINY_ID,
                                                          seed=0)))
    if SD15_ID in wanted:
        t0 = time.monotonic()
        print("building the SD 1.5-shaped random-weight pipeline (about 2 GB) ...", flush=True)
        entries.append(sd15_entry(build_sd15(Path(tmpdir) / "models" / SD15_ID, seed=0)))
        print(f"    built in {time.monotonic() - t0:.0f} s", flush=True)
    path = Path(tmpdir) / "models.json"
    path.write_text(json.dumps({"models": entries}, indent=2))
    Catalogue.from_file(path)  # the gateway must accept it
    return path


# --------------------------------------------------------------------------- helpers

def pct(values, p):
    return jobs_bench.pct(values, p)


def ratio(a, b):
    return a / b if b else float("nan")


def utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def machine_info(pg_url, device, dtype):
    import diffusers
    import torch
    import transformers

    info = sync_bench.machine_info(pg_url)
    info["nproc"] = len(os.sched_getaffinity(0))
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info.update({"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                 "torch": torch.__version__, "diffusers": diffusers.__version__,
                 "transformers": transformers.__version__,
                 "torch_threads": torch.get_num_threads()})
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["accelerator"] = f"CPU: {info['cpu']} ({info['nproc']} cores)"
    return info


def body(model, width, height, steps, seed):
    return {"prompt": PROMPT, "modelName": model, "width": width, "height": height,
            "steps": steps, "seed": seed, "batchSize": 1}


# --------------------------------------------------------------------------- (a) direct

def run_direct(cache, spec, width, height, steps, images, warmup, deadline):
    """The production loader and ``generate_images``, one image per call, in this process."""
    from jobs.gpu.pipeline import ImageRequest, generate_images

    def one(seed):
        req = ImageRequest(prompt=PROMPT, width=width, height=height, steps=steps, seed=seed)
        return generate_images(cache, spec, [req])[0][0]

    t0 = time.perf_counter()
    cache.get(spec)
    load_s = time.perf_counter() - t0
    for i in range(warmup):
        one(WARM_SEED0 + i)
    per, first = [], None
    t0 = time.perf_counter()
    for i in range(images):
        if time.monotonic() > deadline:
            break
        s = time.perf_counter()
        image = one(SEED0 + i)
        per.append(time.perf_counter() - s)
        if first is None:
            first = image
    wall = time.perf_counter() - t0
    return {"images": images, "done": len(per), "seconds": wall,
            "images_s": ratio(len(per), wall), "p50_ms": pct(per, 50) * 1000,
            "p99_ms": pct(per, 99) * 1000, "load_s": load_s}, first


# --------------------------------------------------------------------------- (b) gateway

def run_gateway(pg_url, port, key, worker, model, width, height, steps, images, warmup,
                threads, timeout, log_path):
    deadline = time.monotonic() + timeout
    warm = [body(model, width, height, steps, WARM_SEED0 + i) for i in range(warmup)]
    if warm:  # also loads the model in the worker
        uids, errors, _ = jobs_bench.submit_http(port, key, PATH, warm, 1, deadline)
        done = jobs_bench.wait_compositions(pg_url, uids, deadline, worker) if uids else 0
        rows = jobs_bench.composition_rows(pg_url, uids)
        if errors or done < len(warm) or any(r["status"] != "completed" for r in rows):
            bad = [f"{r['status']} {r['error']}" for r in rows if r["status"] != "completed"]
            raise RuntimeError(f"the gateway worker did not run the warm-up jobs "
                               f"({errors[:3]} {bad[:3]}):\n" + jobs_bench.log_tail(log_path))

    deadline = time.monotonic() + timeout
    bodies = [body(model, width, height, steps, SEED0 + i) for i in range(images)]
    start = utcnow()
    uids, errors, submit_s = jobs_bench.submit_http(port, key, PATH, bodies,
                                                    min(threads, images), deadline)
    jobs_bench.wait_compositions(pg_url, uids, deadline, worker)
    rows = jobs_bench.composition_rows(pg_url, uids)
    ok = [r for r in rows if r["status"] == "completed"]
    span = (max(r["finished_at"] for r in ok) - start).total_seconds() if ok else 0.0
    e2e = [(r["finished_at"] - r["created_at"]).total_seconds() for r in ok]
    run = [(r["finished_at"] - r["started_at"]).total_seconds() for r in ok]
    bad = [f"{r['uid']} {r['status']} {r['error']}" for r in rows if r["status"] != "completed"]
    by_seed = {}
    for r in ok:
        outputs = json.loads(r["outputs"]) if isinstance(r["outputs"], str) else r["outputs"]
        with contextlib.suppress(Exception):
            by_seed[outputs[0]["seed"]] = (r["uid"], outputs[0]["url"].rsplit("/", 1)[-1])
    return {"images": images, "accepted": len(uids), "completed": len(ok),
            "errors": errors[:5] + bad[:5], "seconds": span,
            "images_s": ratio(len(ok), span) if len(ok) == images else float("nan"),
            "images_s_partial": ratio(len(ok), span), "submit_s": submit_s,
            "p50_ms": pct(e2e, 50) * 1000, "p99_ms": pct(e2e, 99) * 1000,
            "run_p50_ms": pct(run, 50) * 1000, "run_p99_ms": pct(run, 99) * 1000,
            "first_output": by_seed.get(SEED0)}


def same_pixels(image, data_dir, output):
    """Whether the worker's PNG for seed SEED0 has the same pixels as the direct run's."""
    if image is None or output is None:
        return None
    from PIL import Image

    uid, name = output
    path = Path(data_dir) / "outputs" / uid / name
    try:
        with Image.open(path) as png:
            return png.convert("RGB").tobytes() == image.convert("RGB").tobytes()
    except OSError:
        return None


# --------------------------------------------------------------------------- report

def print_report(info, results, loads, args):
    print()
    print(f"== generation benchmark, {info['date']}")
    print(f"device {info['device']} ({info['dtype']}), {info['accelerator']}; torch "
          f"{info['torch']} ({info['torch_threads']} threads), diffusers {info['diffusers']}, "
          f"transformers {info['transformers']}"
          + (f", CUDA {info['cuda']}" if info.get("cuda") else ""))
    print(f"machine: nproc {info['nproc']}, CPU {info['cpu']}, Python {info['python']}, "
          f"PostgreSQL {info['postgresql']}, Redis {info['redis']}, kernel {info['kernel']}")
    print(f"load average before {loads[0]}, after {loads[1]} (other work on the machine "
          f"depresses every figure)")
    print("a = direct: PipelineCache + generate_images in one process, one image per call "
          "(latency: the call)")
    print(f"b = gateway: POST {PATH} from {args.threads} client threads -> ONE gateway "
          f"worker (latency: created_at -> finished_at; run: started_at -> finished_at)")
    print(f"images/s of b = images / (last finished_at - first submit); GPU_BATCH_MAX="
          f"{args.batch_max}; torch threads {args.torch_threads or 'default'}"
          + (f"; each side: its best of {args.repeat} rounds" if args.repeat > 1 else ""))
    print()
    head = (f"{'config':<10} {'size':>9} {'steps':>5} {'N':>4} | {'a img/s':>8} "
            f"{'a p50 ms':>9} {'a p99 ms':>9} | {'b img/s':>8} {'b p50 ms':>9} "
            f"{'b p99 ms':>9} {'run p50':>8} | {'b/a':>6} {'overhead':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        a, b = r["a"], r["b"]
        rb = ratio(b["images_s"], a["images_s"])
        print(f"{r['name']:<10} {r['width']:>4}x{r['height']:<4} {r['steps']:>5} "
              f"{r['images']:>4} | {a['images_s']:>8.3f} {a['p50_ms']:>9.1f} "
              f"{a['p99_ms']:>9.1f} | {b['images_s']:>8.3f} {b['p50_ms']:>9.1f} "
              f"{b['p99_ms']:>9.1f} {b['run_p50_ms']:>8.1f} | {rb:>6.3f} "
              f"{(1 - rb) * 100:>7.1f}%")
    print()
    for r in results:
        a, b = r["a"], r["b"]
        extra = ""
        if b["completed"] < b["images"] or a["done"] < a["images"]:
            extra = (f"; NOT all done: a {a['done']}/{a['images']}, b {b['completed']}/"
                     f"{b['images']} {b['errors']}")
        px = {True: "same pixels", False: "DIFFERENT pixels", None: "not compared"}[
            r["same_pixels"]]
        print(f"  {r['name']}: a {a['seconds']:.2f} s (model load {a['load_s']:.2f} s), "
              f"b {b['seconds']:.2f} s (submitting took {b['submit_s']:.2f} s); per image "
              f"a p50 {a['p50_ms']:.1f} ms vs b run p50 {b['run_p50_ms']:.1f} ms "
              f"(x{ratio(b['run_p50_ms'], a['p50_ms']):.3f}); seed {SEED0}: {px}{extra}")
        if len(r["rounds"]) > 1:
            print("    rounds, images/s a/b: " + ", ".join(
                f"{x['a']['images_s']:.3f}/{x['b']['images_s_partial']:.3f}"
                for x in r["rounds"]))
    print("  overhead = 1 - b/a (the aim: under 5%); b's p50/p99 include the wait behind "
          "the other jobs of the burst")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when available, else cpu (fp16 on cuda, fp32 on cpu)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"comma-separated, among {', '.join(CONFIGS)} (default "
                        f"{','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--full", action="store_true",
                   help="add sd15-512 (and sd15-1024 on cuda): a full-size SD 1.5-shaped "
                        "pipeline with random weights")
    p.add_argument("--images", type=int, help="images per configuration, both runs "
                   "(default per configuration: 30/10/3 for the tiny ones on cpu)")
    p.add_argument("--steps", type=int, help="override every configuration's steps")
    p.add_argument("--warmup", type=int, help="warm-up images per configuration and run "
                   "(default 1 on cpu, 2 on cuda)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of (a then b) per configuration; the table shows each side's "
                        "best round (1)")
    p.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads, both runs (torch.set_num_threads here, "
                        "OMP_NUM_THREADS for the worker); default: torch's own choice")
    p.add_argument("--threads", type=int, default=4, help="client threads submitting (4)")
    p.add_argument("--batch-max", type=int, default=1,
                   help="GPU_BATCH_MAX for the worker (1: one image per pipeline call, as a)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    p.add_argument("--gunicorn-threads", type=int, default=8,
                   help="threads per gunicorn worker (8)")
    p.add_argument("--timeout", type=float, default=900,
                   help="bound on each run of each configuration, s (900)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the gunicorn and worker logs (the rest of the temp dir goes)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        p.error(f"--configs: unknown {unknown}; choose among {', '.join(CONFIGS)}")
    args.config_names = names
    if args.images is not None and not 1 <= args.images <= 10000:
        p.error("--images must be 1..10000")
    if args.steps is not None and not 1 <= args.steps <= 50:
        p.error("--steps must be 1..50")
    if args.warmup is not None and not 0 <= args.warmup <= 20:
        p.error("--warmup must be 0..20")
    if not 1 <= args.threads <= 64 or not 1 <= args.batch_max <= 64:
        p.error("--threads and --batch-max must be 1..64")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be 1..20")
    if args.torch_threads is not None and not 1 <= args.torch_threads <= 256:
        p.error("--torch-threads must be 1..256")
    if not 10 <= args.timeout <= 7200:
        p.error("--timeout must be 10..7200")
    return args


def _on_sigterm(signum, frame):
    raise SystemExit(143)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    import torch

    from jobs.gpu.catalogue import Catalogue
    from jobs.gpu.loader import PipelineCache, pick_device

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device "
                         f"(torch {torch.__version__})")
    device, dtype = pick_device(args.device)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    names = list(args.config_names)
    if args.full:
        names += [n for n in ("sd15-512", "sd15-1024")
                  if n not in names and (n == "sd15-512" or device.type == "cuda")]
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 1)
    per_device = 1 if device.type == "cuda" else 0  # which default image count

    prefix = "bench" + uuid.uuid4().hex[:10]
    tmpdir = tempfile.mkdtemp(prefix="gwbenchgen_")
    db_name = pg_url = None
    procs = []
    loads = [os.getloadavg()]
    started = time.monotonic()
    try:
        db_name, pg_url = sync_bench.create_database()
        print(f"database {db_name}, redis prefix {prefix}, temp dir {tmpdir}", flush=True)
        print(f"device {device} ({str(dtype).replace('torch.', '')}), configurations "
              f"{', '.join(names)}", flush=True)
        models_file = write_models(tmpdir, {CONFIGS[n][0] for n in names})
        data_dir = Path(tmpdir) / "data"
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
               "ADMIN_KEY": sync_bench.ADMIN_KEY, "DATA_DIR": str(data_dir),
               "MODELS_FILE": str(models_file), "GPU_DEVICE": device.type,
               "GPU_BATCH_MAX": str(args.batch_max), "GPU_MAX_MODELS": "1",
               "JOB_TTL_SECONDS": str(int(args.timeout) + 60), "HF_HUB_OFFLINE": "1"}
        if args.torch_threads:
            env["OMP_NUM_THREADS"] = str(args.torch_threads)
        up = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"],
                            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"gateway db upgrade failed:\n{up.stdout}\n{up.stderr}")
        info = machine_info(pg_url, device, dtype)

        gw, port = sync_bench.start_gunicorn(
            "wsgi:app", env_extra=env, workers=args.workers, threads=args.gunicorn_threads,
            pythonpath=[str(ROOT)], log_dir=tmpdir, name="gateway")
        procs.append(gw)
        worker_log = Path(tmpdir) / "gateway-worker.log"
        worker_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
                      "PUBLIC_BASE_URL": f"http://{LOOPBACK}:{port}"}
        worker = jobs_bench.start_process([sys.executable, "-m", "gateway.cli", "worker",
                                           "--queues", "gpu"], worker_env, worker_log)
        procs.append(worker)
        sync_bench.admin(port, "PUT", "/admin/plans/bench", sync_bench.PLAN)
        print(f"gateway on :{port} ({args.workers} x {args.gunicorn_threads}), one gateway "
              f"worker (--queues gpu)", flush=True)

        catalogue = Catalogue.from_file(models_file)
        results = []
        for name in names:
            model, width, height, steps, *defaults = CONFIGS[name]
            steps = args.steps or steps
            images = args.images or defaults[per_device]
            spec = catalogue.find(model)
            print(f"{name}: {width}x{height}, {steps} steps, {images} images "
                  f"(+{warmup} warm-up) ...", flush=True)
            cache = PipelineCache(device.type, max_models=1)
            _, key = sync_bench.make_account(port, name.replace("-", ""))
            rounds, first = [], None
            try:
                for n in range(args.repeat):
                    a, image = run_direct(cache, spec, width, height, steps, images,
                                          warmup if n == 0 else 0,
                                          time.monotonic() + args.timeout)
                    first = first if first is not None else image
                    print(f"    a direct  {a['images_s']:.3f} images/s, p50 "
                          f"{a['p50_ms']:.1f} ms", flush=True)
                    b = run_gateway(pg_url, port, key, worker, model, width, height, steps,
                                    images, warmup if n == 0 else 0, args.threads,
                                    args.timeout, worker_log)
                    print(f"    b gateway {b['images_s_partial']:.3f} images/s, p50 "
                          f"{b['p50_ms']:.1f} ms, {b['completed']}/{images} completed; b/a "
                          f"{ratio(b['images_s'], a['images_s']):.3f}", flush=True)
                    rounds.append({"a": a, "b": b})
            finally:
                cache.clear()
                del cache
            best_a = max((r["a"] for r in rounds), key=lambda x: x["images_s"])
            best_b = max((r["b"] for r in rounds), key=lambda x: x["images_s_partial"])
            results.append({"name": name, "model": model, "width": width, "height": height,
                            "steps": steps, "images": images, "a": best_a, "b": best_b,
                            "rounds": rounds,
                            "same_pixels": same_pixels(first, data_dir,
                                                       rounds[0]["b"]["first_output"])})

        loads.append(os.getloadavg())
        loads = [" ".join(f"{x:.2f}" for x in la) for la in loads]
        print_report(info, results, loads, args)
        print(f"(whole run {time.monotonic() - started:.0f} s, before cleanup)")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "machine": info,
                 "loadavg": loads, "results": results}, indent=2, default=str))
        ok = all(r["b"]["completed"] == r["images"] and r["a"]["done"] == r["images"]
                 for r in results)
        if not ok:
            print("NOT every image was generated: see above", file=sys.stderr)
        return 0 if ok else 1
    finally:
        jobs_bench.teardown(procs, pg_url, prefix, db_name)
        if args.keep_logs:
            for path in Path(tmpdir).iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.suffix != ".log":
                    path.unlink(missing_ok=True)
            print(f"logs kept in {tmpdir}")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
