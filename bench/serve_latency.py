"""Case search (``rocoray serve``): query latency p50/p99 for text and image queries, with
and without the fusion rerank (k=32), on the ROCO sample's test gallery (857 items) and on a
10x larger synthetic gallery; throughput at 1 and 2 replicas. All measured in this one run,
on loopback, by HTTP clients in this process (aim: two-tower text p50 < 50 ms, rerank at
k=32 < 300 ms on a 2-CPU machine). One replica holds the machine's CPUs (--cpus), two
replicas one half each: the same CPUs, split two ways.

    python -m bench.serve_latency [--queries 60] [--seconds 15] [--clients 8]
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import numpy as np

from bench._checkpoints import checkpoint_record
from bench._common import held_out_split, write_result

TARGET = {"text_p50_ms": 50.0, "rerank_p50_ms": 300.0}
MODES = {"text": ("text", False), "text+rerank": ("text", True), "image": ("image", False),
         "image+rerank": ("image", True)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(session, url: str, kind: str, payload, k: int = 10, rerank: bool = False):
    if kind == "text":
        return session.post(f"{url}/api/search/text", json={"query": payload, "k": k,
                                                             "rerank": rerank}, timeout=60)
    return session.post(f"{url}/api/search/image?k={k}&rerank={str(rerank).lower()}",
                        data=payload, timeout=60)


def percentiles(ms) -> dict:
    ms = np.asarray(ms, np.float64)
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 95, 99)} if len(ms) else {}


def load(url: str, clients: int, seconds: float, kind: str, payloads: list, k: int = 10,
         rerank: bool = False) -> dict:
    """``clients`` threads sending queries (cycling through ``payloads``) for ``seconds``:
    every error is kept (never hidden), latencies of the answered ones, requests per second."""
    import requests

    latencies, errors, lock = [], [], threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int):
        with requests.Session() as session:
            i = offset
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = query(session, url, kind, payloads[i % len(payloads)], k, rerank)
                    problem = None if r.status_code == 200 and len(r.json()["hits"]) == k \
                        else f"{r.status_code}: {r.text[:200]}"
                except requests.RequestException as exc:
                    problem = repr(exc)[:200]
                with lock:
                    if problem is None:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors.append(problem)
                i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": seconds, "requests": len(latencies),
            "errors": errors, "requests_per_s": len(latencies) / wall, **percentiles(latencies)}


def sequential(url: str, kind: str, payloads: list, rerank: bool) -> dict:
    """One client, one query at a time: the latency a user sees."""
    import requests

    with requests.Session() as session:
        query(session, url, kind, payloads[0], rerank=rerank)  # warm-up, not counted
        ms, server = [], []
        for p in payloads:
            t0 = time.perf_counter()
            r = query(session, url, kind, p, rerank=rerank)
            r.raise_for_status()
            ms.append((time.perf_counter() - t0) * 1000)
            server.append(r.json()["took_ms"])
    # took_ms: the index's own time (encode the query, score, rerank); the rest is HTTP,
    # the Serve proxy and the router
    return {"queries": len(ms), **percentiles(ms),
            "server_p50_ms": float(np.percentile(server, 50))}


def measure(name: str, two_tower: str, fusion: str, data: str, split: str, args) -> dict:
    import requests
    from ray import serve

    from core.data.rocov2 import image_bytes_column, read_split
    from ray_jobs.serve import ServeConfig, start

    table = read_split(data, split, columns=["caption", "image"], max_rows=args.queries)
    captions = [c for c in table.column("caption").to_pylist() if c and c.strip()]
    images = [b for b in image_bytes_column(table) if b]
    row: dict = {"gallery": name, "data": data, "split": split,
                 "checkpoints": {"two_tower": checkpoint_record(two_tower),
                                 "fusion": checkpoint_record(fusion)}}
    # the machine's CPUs split two ways: one replica holding all of them (its torch ops use
    # them all) or one replica per CPU
    cpus = args.cpus
    for replicas in (1, 2):
        cfg = ServeConfig(two_tower=two_tower, fusion=fusion, data=data, split=split,
                          port=free_port(), rerank_k=32, alpha=0.0, replicas=replicas,
                          cpus_per_replica=cpus / replicas, cache=args.cache)
        row[f"cpus_per_replica_{replicas}"] = cpus / replicas
        try:
            url = start(cfg)
            info = requests.get(f"{url}/api/info").json()
            row["gallery_size"] = info["gallery_size"]
            if replicas == 1:
                row["latency"] = {mode: sequential(url, kind, captions if kind == "text"
                                                   else images, rerank)
                                  for mode, (kind, rerank) in MODES.items()}
                print(name, {m: round(v["p50_ms"], 1) for m, v in row["latency"].items()})
            row[f"throughput_{replicas}_replicas"] = load(url, args.clients, args.seconds,
                                                          "text", captions)
            print(name, replicas, "replica(s):",
                  round(row[f"throughput_{replicas}_replicas"]["requests_per_s"], 1), "req/s")
        finally:
            serve.shutdown()
    row["replica_speedup"] = (row["throughput_2_replicas"]["requests_per_s"]
                              / row["throughput_1_replicas"]["requests_per_s"])
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--roco", default="../shared/data/roco-sample")
    p.add_argument("--roco-runs", default="runs/demo-roco-sample/train")
    p.add_argument("--synthetic-runs", default="runs/demo/train")
    p.add_argument("--queries", type=int, default=60, help="sequential queries per mode")
    p.add_argument("--seconds", type=float, default=15.0, help="per throughput measurement")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cpus", type=float, default=2.0, help="CPUs the replicas share")
    p.add_argument("--cache", default="bench/results/tmp_serve/cache")
    p.add_argument("--load", metavar="URL", default=None,
                   help="only put bounded load on a running service at URL (text queries "
                        "from --load-queries, one per line) and print its row as JSON")
    p.add_argument("--load-queries", default=None, help="a file of text queries, one a line")
    args = p.parse_args(argv)
    if args.load:
        import json

        queries = Path(args.load_queries).read_text().splitlines()
        row = load(args.load, args.clients, args.seconds, "text", queries)
        print(json.dumps(row))
        return row

    from ray_jobs.runtime import init_ray

    init_ray()
    rows = []
    if Path(args.roco).exists():
        rows.append(measure("ROCO sample test", f"{args.roco_runs}/two_tower",
                            f"{args.roco_runs}/fusion", args.roco, "test", args))
    n = 10 * (rows[0]["gallery_size"] if rows else 857)
    data, split = held_out_split(n, path=f"data/synthetic-heldout-{n}", seed=2028)
    rows.append(measure(f"synthetic, 10x ({n} cases)", f"{args.synthetic_runs}/two_tower",
                        f"{args.synthetic_runs}/fusion", data, split, args))
    result = {"bench": "serve_latency", "rerank_k": 32, "clients": args.clients,
              "target": TARGET, "rows": rows,
              "note": "HTTP clients run in the benchmark process on the same 2 CPUs as the "
                      "replicas: the 2-replica figure shares those CPUs with them"}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    rows, t = [], r["target"]
    for g in r["rows"]:
        lat = g["latency"]
        text, rerank = lat["text"]["p50_ms"], lat["text+rerank"]["p50_ms"]
        one, two = (g[f"throughput_{n}_replicas"]["requests_per_s"] for n in (1, 2))
        measured = ("; ".join(f"{m} p50 {v['p50_ms']:.0f} / p99 {v['p99_ms']:.0f} ms"
                              for m, v in lat.items())
                    + f"; text queries {one:.0f} req/s at 1 replica x "
                      f"{g['cpus_per_replica_1']:g} CPUs, {two:.0f} at 2 x "
                      f"{g['cpus_per_replica_2']:g} ({g['replica_speedup']:.2f}x; "
                      f"{r['clients']} clients)")
        measured += (f"; of the text p50, the index itself {lat['text']['server_p50_ms']:.0f}"
                     " ms (the rest: HTTP, Serve's proxy and router)")
        name = g["gallery"] if str(g["gallery_size"]) in g["gallery"] else (
            f"{g['gallery']} ({g['gallery_size']} cases)")
        rows.append((f"case search, {name}, rerank k={r['rerank_k']}", measured,
                     f"text p50 < {t['text_p50_ms']:.0f} ms, rerank p50 < "
                     f"{t['rerank_p50_ms']:.0f} ms",
                     "met" if text < t["text_p50_ms"] and rerank < t["rerank_p50_ms"]
                     else "missed"))
    return rows


if __name__ == "__main__":
    main()
