"""Where one POST /v1/recommend request's server CPU goes, in process (no sockets): by user id, warm
(memoised) users, the ASGI app called directly, and each step of the path timed on its own.

    PYTHONPATH=src nice -n 19 python benchmarks/recommend_profile.py \\
        --bundle runs/bench/synthetic-100k --index faiss-HNSW32 -k 100 --requests 3000

Steps (CPU time per request, `time.process_time` over --requests requests each, after a warm-up):
- asgi: the whole app (middleware, routing, FastAPI's body reading and validation, the endpoint, the
  response), called as uvicorn calls it, minus the HTTP parsing and socket work of the server, one
  request at a time; asgi_together: the same with --concurrency requests in flight at once (what
  batching coalesces: compare RECINDEX batch_window_ms=0 and 1 with --env)
- json: json.loads of the body; validate: RecommendRequest.model_validate of the parsed body
- find_user: the user id to the bundle's user index
- search: index.search of the (memoised) query vector for k + len(history) items, no exclusion
- search+mask: index.search with the history excluded (what the service asks); mask = the difference
- recommend: Recommender.recommend(user_id=..., k=k): lookup, search, masking
- response: the JSON answer (app._response)
The rest of `asgi` is the framework: routing, dependencies, FastAPI's request handling. --cprofile
prints the top functions of the ASGI loop by own time. Works on any checkout whose serve package has
create_app, Recommender and registry.load_version (to profile old code: PYTHONPATH=OLD/src).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import sys
import time

import numpy as np
import torch

from recindex.pipelines.recommend import find_user
from recindex.serve import app as app_module
from recindex.serve.recommender import Recommender
from recindex.serve.registry import load_version
from recindex.serve.schemas import RecommendRequest
from recindex.serve.settings import ServiceSettings

STEPS = (
    "asgi",
    "asgi_together",
    "json",
    "validate",
    "find_user",
    "search",
    "mask",
    "recommend",
    "response",
    "framework",
)


def asgi_call(app, body: bytes):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/recommend",
        "raw_path": b"/v1/recommend",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    sent = []

    async def receive():
        return message

    async def send(reply):
        sent.append(reply)

    async def run():
        await app(scope, receive, send)
        return sent

    return run


def per_request_ms(step, payloads, repeats: int) -> float:
    n = len(payloads)
    started = time.process_time()
    for i in range(repeats):
        step(payloads[i % n])
    return (time.process_time() - started) * 1000 / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="runs/bench/synthetic-100k")
    parser.add_argument("--index", default="faiss-HNSW32", help="index name in the bundle, or 'exact'")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="service settings")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight at once for the asgi_together step (batching's case)",
    )
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    if not 0 < args.requests <= 200_000 or not 1 <= args.concurrency <= 1000:
        parser.error("--requests must be in 1..200000 and --concurrency in 1..1000")

    torch.set_num_threads(1)
    settings = dict(item.split("=", 1) for item in args.env)
    version = load_version(args.bundle, None if args.index == "exact" else args.index)
    recommender = Recommender(version)
    app = app_module.create_app(ServiceSettings(**settings), recommender)
    data = version.bundle.data
    users = random.Random(0).sample(range(data.n_users), min(args.users, data.n_users))
    bodies = [json.dumps({"user_id": str(data.user_ids[u]), "k": args.k}).encode() for u in users]
    loop = asyncio.new_event_loop()
    for body in bodies:  # warm: every user's query vector memoised, as in the load benchmark
        assert loop.run_until_complete(asgi_call(app, body)())[0]["status"] == 200
    seen = {u: data.sequence(u) for u in users}
    vectors = {u: recommender.recommend(user_id=str(data.user_ids[u]), k=args.k).query for u in users}
    index, k, n = version.index, args.k, args.requests
    parsed = [json.loads(b) for b in bodies]
    answers = [recommender.recommend(user_id=str(data.user_ids[u]), k=k) for u in users]

    def asgi(body):
        loop.run_until_complete(asgi_call(app, body)())

    def asgi_together(bodies_at_once):  # --concurrency requests in flight at once (they can batch)
        async def run():
            await asyncio.gather(*(asgi_call(app, b)() for b in bodies_at_once))

        loop.run_until_complete(run())

    together = [bodies[i : i + args.concurrency] for i in range(0, len(bodies), args.concurrency)]

    steps = {
        "asgi": (asgi, bodies),
        "asgi_together": (asgi_together, together),
        "json": (json.loads, bodies),
        "validate": (RecommendRequest.model_validate, parsed),
        "find_user": (lambda u: find_user(data, str(data.user_ids[u])), users),
        "search": (lambda u: index.search(vectors[u], min(len(index), k + len(seen[u]))), users),
        "search+mask": (lambda u: index.search(vectors[u], k, exclude=[seen[u]]), users),
        "recommend": (lambda u: recommender.recommend(user_id=str(data.user_ids[u]), k=k), users),
        "response": (lambda a: app_module._response(version, a, False, time.perf_counter()), answers),
    }
    rounds = {name: [] for name in steps}
    for _ in range(3):  # interleaved rounds: a busy moment on a shared machine hits every step alike
        for name, (step, payloads) in steps.items():
            repeats = n // args.concurrency if name == "asgi_together" else n
            per_call = per_request_ms(step, payloads, repeats)
            rounds[name].append(per_call / args.concurrency if name == "asgi_together" else per_call)
    ms = {name: float(np.median(values)) for name, values in rounds.items()}
    ms["mask"] = ms["search+mask"] - ms["search"]
    ms["framework"] = ms["asgi"] - ms["json"] - ms["validate"] - ms["recommend"] - ms["response"]
    print(f"{args.bundle} ({len(index):,} items), {args.index}, k={k}, {n:,} requests x 3 rounds (median)")
    print(f"python {sys.version.split()[0]}; CPU ms per request:")
    for name in STEPS:
        print(f"  {name:<10} {ms[name]:7.3f}")
    if args.cprofile:
        profile = cProfile.Profile()
        profile.enable()
        for i in range(n):
            asgi(bodies[i % len(bodies)])
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    print(json.dumps({"ms_per_request": ms}))


if __name__ == "__main__":
    main()
