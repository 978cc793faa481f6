#!/usr/bin/env python3
"""Load an OpenAI-compatible server with concurrent streaming chat clients (standard library only).

usage: bench_serve.py --url http://127.0.0.1:8080 [--clients 8] [--seconds 30 | --requests N]
                      [--max-tokens 128] [--check-solo] [--pid PID] [--json-out FILE]

Each client sends greedy (temperature 0) streaming chat requests back to back, cycling through a
fixed set of prompts, for --seconds (or until --requests in all). Measured: aggregate decode
throughput (completion tokens of every finished request / wall time), time to first token
(p50/p99), failures (a status other than 200 and 429, a stream without [DONE], a broken
connection), deliberate 429s. --check-solo first serves each prompt alone and then requires every
concurrent answer to equal its solo answer (no response mixes tokens of two requests). --pid
records the server's resident memory before and after. Final lines: `name: value`.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step, in detail.",
    "Describe the water cycle for a school report.",
    "Write a letter to a friend about a trip to the mountains.",
    "List many facts about the planets of the solar system.",
    "Tell me about the history of bread.",
    "Write a poem about autumn leaves, then explain it.",
    "Describe a busy market in the morning.",
]


def rss_mib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def one_request(url, prompt, max_tokens, model, timeout=600):
    """Stream one chat completion; returns (status, text, completion_tokens, ttft_s, done)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    body = json.dumps({
        "model": model, "temperature": 0, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}],
    })
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        r.read()
        conn.close()
        return r.status, "", 0, None, False
    text, tokens, ttft, done, pieces = [], None, None, False, 0
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1024)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                v = json.loads(data)
                if v.get("usage"):
                    tokens = v["usage"]["completion_tokens"]
                for c in v.get("choices", []):
                    piece = (c.get("delta") or {}).get("content") or ""
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        pieces += 1
                        text.append(piece)
    conn.close()
    return 200, "".join(text), tokens if tokens is not None else pieces, ttft, done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--requests", type=int, default=0, help="stop after this many (0: use --seconds)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--check-solo", action="store_true")
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--json-out")
    a = ap.parse_args()

    solo = {}
    if a.check_solo:
        for p in PROMPTS:
            st, text, _, _, done = one_request(a.url, p, a.max_tokens, a.model)
            if st != 200 or not done:
                sys.exit(f"solo request failed: {st}")
            solo[p] = text
    rss_before = rss_mib(a.pid)
    lock = threading.Lock()
    results = {"ok": 0, "busy": 0, "failed": 0, "mismatch": 0, "tokens": 0, "ttft": [],
               "errors": []}
    started = [0]
    stop_at = time.perf_counter() + a.seconds

    def client(i):
        k = i
        while True:
            with lock:
                if a.requests and started[0] >= a.requests:
                    return
                started[0] += 1
            if not a.requests and time.perf_counter() >= stop_at:
                return
            p = PROMPTS[k % len(PROMPTS)]
            k += 1
            try:
                st, text, tokens, ttft, done = one_request(a.url, p, a.max_tokens, a.model)
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    results["failed"] += 1
                    results["errors"].append(repr(e))
                continue
            with lock:
                if st == 429:
                    results["busy"] += 1
                    time.sleep(0.2)
                elif st != 200 or not done:
                    results["failed"] += 1
                    results["errors"].append(f"status {st}, done {done}")
                else:
                    results["ok"] += 1
                    results["tokens"] += tokens
                    if ttft is not None:
                        results["ttft"].append(ttft)
                    if a.check_solo and text != solo[p]:
                        results["mismatch"] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss_after = rss_mib(a.pid)
    ttft = sorted(results["ttft"])
    pct = lambda q: ttft[min(len(ttft) - 1, int(q * len(ttft)))] if ttft else float("nan")
    out = {"url": a.url, "clients": a.clients, "max_tokens": a.max_tokens, "wall_s": wall,
           "requests_ok": results["ok"], "requests_429": results["busy"],
           "failed": results["failed"], "mismatched": results["mismatch"],
           "completion_tokens": results["tokens"],
           "tokens_per_s": results["tokens"] / wall if wall > 0 else 0.0,
           "ttft_p50_s": pct(0.5), "ttft_p99_s": pct(0.99),
           "rss_before_mib": rss_before, "rss_after_mib": rss_after,
           "errors": results["errors"][:5]}
    print(json.dumps(out))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f)
    for k in ["tokens_per_s", "ttft_p50_s", "ttft_p99_s", "requests_ok", "requests_429", "failed",
              "mismatched", "rss_before_mib", "rss_after_mib"]:
        v = out[k]
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return 1 if results["failed"] or results["mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
