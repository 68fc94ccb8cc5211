"""The ``gateway`` command: schema upgrades, the servers, and the operator's CLI.

Operator commands call the same service functions as the admin routes, so the shell and
HTTP can never disagree about what an operation does.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.config import Config


def _connect(config):
    """Commands need the database only: bound through the composition root, no Redis."""
    from gateway.services import bind_database
    from metering import db

    bind_database(config, role="command")
    return db.connection()


def _generations(config):
    """What announces a key, plan or price change to running gateways' caches: the
    configured Redis, or the embedded one's socket (a change while no gateway runs on the
    embedded Redis has no cache to reach, so nothing is started for it)."""
    from jobs.connection import redis_client
    from metering.generations import Generations

    url = config.redis_url or f"unix://{config.data_dir / 'redis' / 'redis.sock'}"
    return _Announcer(Generations(redis_client(url), config.redis_prefix),
                      embedded=not config.redis_url)


class _Announcer:
    """``Generations`` for a command: a failed announcement is a warning (the change is
    saved; rerun the command to announce it) instead of a traceback."""

    def __init__(self, generations, *, embedded):
        self.generations, self.embedded = generations, embedded

    def changed(self, field):
        from core.errors import ServiceUnavailable
        from metering.db import database

        def announce():
            try:
                self.generations.bump_now(field)
            except ServiceUnavailable:
                if not self.embedded:
                    print("warning: saved, but Redis did not answer, so running gateways "
                          "may use their cached copy for up to a minute; rerun the command "
                          "once Redis is back", file=sys.stderr)

        database.after_commit(announce)


def _account_id(ref):
    from metering.models import Account

    row = Account.get_or_none((Account.id == ref) | (Account.username == ref))
    if row is None:
        raise SystemExit(f"no account {ref!r}")
    return row.id


def _print(obj):
    print(json.dumps(obj, indent=2, default=str))


def cmd_db(config, args):
    from gateway import schema as migrations

    config.data_dir.mkdir(parents=True, exist_ok=True)
    with _connect(config):
        if args.db_command == "upgrade":
            applied = migrations.upgrade()
            print(f"applied {applied}" if applied else "schema up to date")
        print(f"schema version {migrations.current_version()}")


def cmd_accounts(config, args):
    from gateway.resources.common import account_view
    from metering import plans
    from oauth.accounts import create_account, get_account

    with _connect(config):
        if args.accounts_command == "create":
            account, key = create_account(args.username, args.password, credits=args.credits,
                                          plan=args.plan, password_required=False)
            _print({**account_view(account), "api_key": key})
        elif args.accounts_command == "show":
            _print(account_view(get_account(_account_id(args.account))))
        elif args.accounts_command == "set-plan":
            account_id = _account_id(args.account)
            plans.assign_plan(account_id, args.plan, generations=_generations(config))
            _print(account_view(get_account(account_id)))


def cmd_credits(config, args):
    from gateway.resources.common import ledger_view
    from metering import ledger

    with _connect(config):
        if args.credits_command == "grant":
            _print(ledger_view(ledger.grant(_account_id(args.account), args.amount,
                                            reason=args.reason)))
        elif args.credits_command == "refund":
            entry, created = ledger.refund(args.receipt, reason=args.reason)
            _print({**ledger_view(entry), "created": created})


def cmd_keys(config, args):
    from gateway.resources.common import key_view
    from oauth import keys

    with _connect(config):
        if args.keys_command == "create":
            row, secret = keys.create_key(_account_id(args.account), args.description)
            _print({**key_view(row), "apiKey": secret})
        elif args.keys_command == "list":
            _print([key_view(r) for r in keys.list_keys(_account_id(args.account))])
        elif args.keys_command == "revoke":
            _print(key_view(keys.revoke_key(None, args.key_id,
                                            generations=_generations(config))))


def cmd_plans(config, args):
    from metering import plans

    with _connect(config):
        row = plans.set_plan(args.name, args.per_minute, args.per_day,
                             generations=_generations(config))
        _print({"name": row.name, "perMinute": row.per_minute, "perDay": row.per_day})


def cmd_prices(config, args):
    from actions.shipped import default_registry
    from metering import plans

    default_registry().get(args.action)
    with _connect(config):
        plans.set_price(args.action, args.credits, generations=_generations(config))
        _print({"action": args.action, "credits": args.credits})


def cmd_oauth_clients(config, args):
    from oauth import provider

    with _connect(config):
        if args.oauth_command == "create":
            client, secret = provider.register_client(args.name, args.redirect_uris,
                                                      args.scopes, confidential=not args.public)
            _print({**provider.client_view(client), "client_secret": secret})
        elif args.oauth_command == "list":
            _print([provider.client_view(c) for c in provider.list_clients()])


def cmd_cleanup(config, args):
    from core.clock import SYSTEM
    from metering import idempotency

    with _connect(config):
        print(f"purged {idempotency.purge_expired(SYSTEM.now())} expired idempotency records")


def cmd_worker(config, args):
    """An RQ worker in this process (SimpleWorker: no fork per job, so models loaded once
    stay loaded), with the scheduler for webhook retries and a reaper thread that finishes
    compositions whose worker died and puts back the ones whose RQ job Redis lost.

    A Redis outage does not end it: the worker reconnects with backoff and serves again in
    this same process (``jobs.engine.serve_forever``), and the reaper keeps its rounds. A
    process that dies anyway (killed, out of memory) is the supervisor's to restart:
    ``gateway serve`` restarts its worker, and in production the platform must restart
    ``worker`` processes (Procfile)."""
    import functools
    import threading

    from gateway.services import install_worker_runtime
    from jobs import engine
    from jobs import queues as qnames
    from jobs.content import maintenance as content_maintenance
    from jobs.workflows import executor

    rt = install_worker_runtime(config)
    queues = [qnames.queue_name(config, q)
              for q in qnames.expand_queues(args.queues.split(","), rt.models)]

    def reap_forever():
        failing = False
        while True:
            try:
                engine.reap()
                executor.reap()  # project runs: lost nodes, runs past their ttl
                content_maintenance.tick(rt)  # analytics flush, expired uploads, staging
                if failing:
                    print("reaper: working again", file=sys.stderr)
                failing = False
            except Exception as exc:  # keep reaping (Redis or the database may be away)
                if not failing:
                    print(f"reaper: {type(exc).__name__}: {exc}", file=sys.stderr)
                failing = True
            time.sleep(max(1.0, rt.heartbeat_s))

    if any(q.split(".")[0] == "gpu" for q in args.queues.split(",")):
        # One such worker per GPU (CUDA_VISIBLE_DEVICES or GPU_DEVICE=cuda:N): it runs one
        # pipeline at a time, and batches requests instead of running them side by side.
        print(f"gpu worker: device={config.gpu_device} "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')} "
              f"batch_max={config.gpu_batch_max} max_models={config.gpu_max_models} "
              f"memory_limit_mb={config.gpu_memory_limit_mb or 'none'}", file=sys.stderr)
    make_worker = functools.partial(engine.RoundRobinSimpleWorker, queues, connection=rt.redis)
    if args.burst:
        make_worker().work(burst=True)
        return
    threading.Thread(target=reap_forever, daemon=True, name="reaper").start()
    if qnames.queue_name(config, "cpu") in queues:
        from jobs import billing as billing_job

        try:  # the periodic allowance job (docs/BILLING.md); it reschedules itself
            billing_job.schedule(rt.redis, config, rt.clock, soon=True)
        except Exception as exc:  # Redis away at start: the next worker start schedules it
            print(f"billing: not scheduled: {type(exc).__name__}: {exc}", file=sys.stderr)
    engine.serve_forever(make_worker, rt.redis)


def cmd_models(config, args):
    """The model catalogue: write a tiny pipeline, list the models, load them to check."""
    from jobs.gpu.catalogue import Catalogue

    if args.models_command == "make-tiny":
        from jobs.gpu.tiny import catalogue_entry, make_tiny

        directory = make_tiny(Path(args.directory).resolve(), seed=args.seed)
        entry = catalogue_entry(args.id, directory)
        print(f"wrote a tiny random-weight pipeline to {directory}")
        if not args.register:
            _print({"models": [entry]})
            return 0
        path = Path(config.models_file or config.data_dir / "models.json")
        models = []
        if path.exists():
            Catalogue.from_file(path)  # an existing file must be valid before we add to it
            models = json.loads(path.read_text())["models"]
        models = [m for m in models if m.get("id") != args.id] + [entry]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"models": models}, indent=2) + "\n")
        Catalogue.from_file(path)  # refuse to leave a file the gateway would not start with
        print(f"registered model {args.id!r} in {path}; restart the gateway and its workers")
        return 0
    catalogue = Catalogue.from_config(config)
    if args.models_command == "list":
        _print({"source": catalogue.source, "models": catalogue.to_json()})
        return 0
    from jobs.gpu.loader import PipelineCache

    cache = PipelineCache(config.gpu_device, max_models=len(catalogue) or 1)
    failed = 0
    for spec in catalogue:
        if args.ids and spec.id not in args.ids:
            continue
        try:
            cache.get(spec)
        except Exception as exc:
            failed += 1
            print(f"{spec.id}: FAILED {getattr(exc, 'message', exc)}")
    for info in cache.loaded:
        print(f"{info['model']}: loaded {info['class']} on {info['device']} {info['dtype']} "
              f"in {info['seconds']}s from {info['path']}")
    return 1 if failed else 0


def cmd_reap(config, args):
    from gateway.services import install_worker_runtime
    from jobs import engine

    install_worker_runtime(config)
    print(f"reaped {engine.reap()} compositions (abandoned or expired ones failed and "
          "refunded, lost ones enqueued again)")


def _bootstrap(config):
    """First run on embedded defaults: an admin key kept under DATA_DIR and a demo account.

    Only on the embedded SQLite database (``make run``'s trial setup). On any other database
    (a real deployment) nothing is made up: without ``ADMIN_KEY`` the admin routes answer
    403 (CONTRACT 10), and no account appears that the operator did not create.

    Returns ``(admin_key, notes, api_key)``: ``api_key`` is the demo account's key when it
    was created now (a key is shown once; later starts only have its hash), else None."""
    from metering.models import Account
    from oauth.accounts import create_account

    notes = []
    admin_key = config.admin_key
    if not config.database_url.startswith("sqlite"):
        if not admin_key:
            notes.append("ADMIN_KEY is unset: the admin routes answer 403 FORBIDDEN")
        notes.append("create an account with: gateway accounts create NAME --credits N")
        return admin_key, notes, None
    if not admin_key:
        path = config.data_dir / "admin_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        admin_key = path.read_text().strip()
        notes.append(f"admin key (from {path}): {admin_key}")
    key = None
    with _connect(config):
        if not Account.select().exists():
            # A password too, so the OAuth consent page (and POST /auth/token) can be tried
            # as the demo user; printed once, like the key, and stored only as a hash.
            password = secrets.token_urlsafe(12)
            account, key = create_account("demo", password, credits=1000)
            notes.append(f"demo account {account.username} with 1000 credits, API key: {key}")
            notes.append(f"demo password (web console at /, OAuth consent page, POST /auth/token): "
                         f"{password}")
        else:
            notes.append("existing accounts kept; make a key with: gateway keys create demo")
    return admin_key, notes, key


def cmd_serve(config, args):
    from core.clock import SYSTEM
    from jobs.connection import resolve_redis_url, stop_embedded_redis
    from metering import idempotency

    config.data_dir.mkdir(parents=True, exist_ok=True)
    cmd_db(config, argparse.Namespace(db_command="upgrade"))
    env = dict(os.environ)
    env["REDIS_URL"] = resolve_redis_url(config)
    env["DATABASE_URL"] = config.database_url
    env["DATA_DIR"] = str(config.data_dir)
    prom = config.data_dir / "prometheus"
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    config = config.replace(bind=args.bind or config.bind,
                            web_workers=args.workers or config.web_workers)
    env["GATEWAY_BIND"] = config.bind
    env["WEB_CONCURRENCY"] = str(config.web_workers)
    admin_key, notes, key = _bootstrap(config)
    env["ADMIN_KEY"] = admin_key
    children = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-c",
                                  "python:gateway.gunicorn_conf", "wsgi:app"], env=env)]
    with_worker = args.with_worker if args.with_worker is not None else not config.redis_url
    worker_cmd = [sys.executable, "-m", "gateway.cli", "worker"]
    if with_worker:
        children.append(subprocess.Popen(worker_cmd, env=env))
    from jobs.views import base_url

    url = base_url(config)
    print(f"\n  gateway listening on {url}  (worker: {'yes' if with_worker else 'no'})")
    for note in notes:
        print(f"  {note}")
    auth = f"Authorization: Bearer {key or '<API key>'}"  # the key printed above, if new
    print(f"  try:  curl -H '{auth}' {url}/zapier/v1/me")
    print(f"        curl -X POST -H '{auth}' -H 'Content-Type: "
          f"application/json' -d '{{\"message\":\"hi\"}}' {url}/zapier/v1/echo", flush=True)
    from jobs.gpu.catalogue import Catalogue

    models = [m.id for m in Catalogue.from_config(config)]
    if models:
        print(f"  generation models: {', '.join(models)}  (GET {url}/getModels)")
        print(f"        curl -X POST -H '{auth}' -H 'Content-Type: "
              f"application/json' -d '{{\"prompt\":\"a lighthouse\"}}' "
              f"'{url}/zapier/v1/generate-image?wait=30'\n", flush=True)
    else:
        print("  no generation models yet: see README \"Generation models\" "
              "(gateway models make-tiny)\n", flush=True)

    print("  stop with Ctrl-C (or SIGTERM): the server, the worker and the embedded Redis "
          "all stop\n", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    next_purge = 0.0
    try:
        while not stopping and children[0].poll() is None:
            if with_worker and children[1].poll() is not None:  # a killed worker comes back
                print(f"  worker exited ({children[1].returncode}); restarting", flush=True)
                children[1] = subprocess.Popen(worker_cmd, env=env)
            if time.monotonic() > next_purge:  # idempotency records live 24 hours
                with _connect(config):
                    idempotency.purge_expired(SYSTEM.now())
                next_purge = time.monotonic() + 3600
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if not config.redis_url:
            # The embedded Redis is a daemon of its own (it outlives its starter by
            # design, so gunicorn and the worker can share it); serve started it, so serve
            # stops it, after the processes using it are gone. It saves on shutdown.
            stop_embedded_redis(config.data_dir)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="schema migrations")
    db.add_argument("db_command", choices=["upgrade", "version"])
    db.set_defaults(fn=cmd_db)

    serve = sub.add_parser("serve", help="web server (and, on embedded defaults, a worker)")
    serve.add_argument("--bind", help="default: GATEWAY_BIND")
    serve.add_argument("--workers", type=int, help="default: WEB_CONCURRENCY")
    serve.add_argument("--with-worker", dest="with_worker", action="store_true", default=None)
    serve.add_argument("--no-worker", dest="with_worker", action="store_false")
    serve.set_defaults(fn=cmd_serve)

    worker = sub.add_parser("worker", help="an RQ worker")
    worker.add_argument("--queues", default="cpu,gpu,webhooks")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(fn=cmd_worker)

    accounts = sub.add_parser("accounts", help="accounts")
    asub = accounts.add_subparsers(dest="accounts_command", required=True)
    create = asub.add_parser("create")
    create.add_argument("username")
    create.add_argument("--password")
    create.add_argument("--credits", type=int, default=0)
    create.add_argument("--plan", default="default")
    asub.add_parser("show").add_argument("account", help="id or username")
    setplan = asub.add_parser("set-plan")
    setplan.add_argument("account")
    setplan.add_argument("plan")
    accounts.set_defaults(fn=cmd_accounts)

    credits = sub.add_parser("credits", help="grants, adjustments and refunds")
    csub = credits.add_subparsers(dest="credits_command", required=True)
    grant = csub.add_parser("grant", help="a negative amount is an adjustment")
    grant.add_argument("account")
    grant.add_argument("amount", type=int)
    grant.add_argument("--reason", default="")
    refund = csub.add_parser("refund")
    refund.add_argument("receipt")
    refund.add_argument("--reason", default="operator refund")
    credits.set_defaults(fn=cmd_credits)

    keys = sub.add_parser("keys", help="API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kcreate = ksub.add_parser("create")
    kcreate.add_argument("account")
    kcreate.add_argument("--description", default="")
    ksub.add_parser("list").add_argument("account")
    ksub.add_parser("revoke").add_argument("key_id")
    keys.set_defaults(fn=cmd_keys)

    plans = sub.add_parser("plans", help="rate-limit plans")
    psub = plans.add_subparsers(dest="plans_command", required=True)
    pset = psub.add_parser("set")
    pset.add_argument("name")
    pset.add_argument("--per-minute", type=int, required=True)
    pset.add_argument("--per-day", type=int, required=True)
    plans.set_defaults(fn=cmd_plans)

    prices = sub.add_parser("prices", help="action prices")
    prsub = prices.add_subparsers(dest="prices_command", required=True)
    prset = prsub.add_parser("set")
    prset.add_argument("action")
    prset.add_argument("credits", type=int)
    prices.set_defaults(fn=cmd_prices)

    oauth_clients = sub.add_parser("oauth-clients", help="OAuth2 client applications")
    osub = oauth_clients.add_subparsers(dest="oauth_command", required=True)
    ocreate = osub.add_parser("create", help="register a client; prints its secret once")
    ocreate.add_argument("name")
    ocreate.add_argument("--redirect-uri", dest="redirect_uris", action="append", required=True)
    ocreate.add_argument("--scopes", default=None,
                         help="comma- or space-separated (default: the integration scopes)")
    ocreate.add_argument("--public", action="store_true",
                         help="no client secret (PKCE only), for apps that cannot keep one")
    osub.add_parser("list")
    oauth_clients.set_defaults(fn=cmd_oauth_clients)

    models = sub.add_parser("models", help="generation models (MODELS_FILE)")
    msub = models.add_subparsers(dest="models_command", required=True)
    tiny = msub.add_parser("make-tiny", help="write a tiny random-weight SD pipeline to DIR "
                           "and register it in the model file")
    tiny.add_argument("directory")
    tiny.add_argument("--id", default="tiny")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--no-register", dest="register", action="store_false")
    msub.add_parser("list", help="the catalogue as /getModels shows it")
    mcheck = msub.add_parser("check", help="load each model on this machine's device")
    mcheck.add_argument("ids", nargs="*")
    models.set_defaults(fn=cmd_models)

    cleanup = sub.add_parser("cleanup", help="purge expired idempotency records")
    cleanup.set_defaults(fn=cmd_cleanup)
    reap = sub.add_parser("reap", help="finish (and refund) compositions whose worker died "
                          "or that expired; enqueue again those whose RQ job was lost")
    reap.set_defaults(fn=cmd_reap)
    return p


def main(argv=None) -> int:
    from core.errors import DomainError

    args = parser().parse_args(argv)
    config = Config.from_env()
    try:
        return args.fn(config, args) or 0
    except DomainError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            print(f"  {detail['field']}: {detail['problem']}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
