#!/usr/bin/env python3
"""A Synod client and a small multi-agent demo, in plain Python (stdlib only).

    python3 synod_agent.py --endpoints 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002

The demo stocks a few SKUs, lets several "pricing agents" (threads) reserve
units until everything is sold, then follows the committed stream
(`GET /v1/stream`) until it has seen every decision the agents made. It exits
0 only if the units the agents reserved equal the stock consumed and the
stream delivered each of their decisions exactly once.

`SynodClient` is the part to copy into your own code:

* `propose(ops, client, request)` sends one decision. Connection errors and
  retryable API errors (429 overloaded, 503 unavailable, 504 timeout) are
  retried, on the next endpoint, with the SAME `client`/`request` pair: the
  replicas record each session's result, so a retry returns the recorded
  outcome instead of applying the decision twice (exactly-once).
* `read(key)` is a local read on one replica (fast, may lag the cluster).
* `follow(token)` yields the committed stream's events. Each event carries a
  resume token; after a dropped connection the generator resumes on the next
  endpoint from the last token, so nothing is skipped or repeated.
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# Errors that mean "this replica did not answer": try the next one.
CONNECTION_ERRORS = (
    urllib.error.URLError,  # refused, unreachable, DNS (HTTPError is handled first)
    http.client.HTTPException,  # RemoteDisconnected, IncompleteRead, ...
    ConnectionError,
    socket.timeout,
    OSError,
)


class SynodError(Exception):
    """A non-2xx answer: `{"code", "message", "retryable", "retry_after_ms"}`."""

    def __init__(self, status, body):
        self.status = status
        self.code = body.get("code", "http_%d" % status)
        self.message = body.get("message", "")
        self.retryable = bool(body.get("retryable", False))
        self.retry_after_ms = body.get("retry_after_ms")
        super().__init__("%d %s: %s" % (status, self.code, self.message))


class SynodClient:
    """HTTP client for a Synod cluster with endpoint failover.

    `endpoints` are "host:port" strings of the replicas' HTTP API. The client
    sticks to the endpoint that last answered and moves on when it fails.
    One instance is not meant to be shared between threads.
    """

    def __init__(self, endpoints, timeout=10.0, patience=60.0):
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout  # seconds per HTTP request
        self.patience = patience  # seconds before propose() gives up
        self._current = 0  # index of the preferred endpoint
        self.resumes = 0  # times follow() resumed on a new connection

    # -- plumbing ---------------------------------------------------------

    @property
    def endpoint(self):
        """The endpoint the next request goes to."""
        return self.endpoints[self._current]

    def _next_endpoint(self):
        self._current = (self._current + 1) % len(self.endpoints)

    def _request(self, method, path, body=None):
        """One HTTP request to the current endpoint; returns the JSON answer.

        Raises SynodError for a non-2xx answer, or a CONNECTION_ERRORS
        exception if the replica could not be reached.
        """
        url = "http://%s%s" % (self.endpoint, path)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)
            except ValueError:
                err = {"message": raw.decode(errors="replace")}
            raise SynodError(e.code, err) from None

    # -- the API ----------------------------------------------------------

    def propose(self, ops, client, request, guards=None, timeout_ms=3000):
        """Proposes one decision and returns the server's answer, e.g.

            {"instance": "0.3@1", "client": 7, "request": 2,
             "outcome": {"Applied": {"results": [...]}}}

        or `{"outcome": {"Rejected": {"reason": ...}}}` (a rejection is an
        answer, not an error). `client` is the session id, `request` its
        sequence number (≥ 1, increasing per client).
        """
        body = {
            "client": client,
            "request": request,
            "ops": ops,
            "guards": guards or [],
            "timeout_ms": timeout_ms,
        }
        deadline = time.monotonic() + self.patience
        delay = 0.05
        while True:
            try:
                return self._request("POST", "/v1/decisions", body)
            except SynodError as e:
                if not e.retryable or time.monotonic() > deadline:
                    raise
                if e.retry_after_ms:  # overloaded: back off as told
                    delay = max(delay, e.retry_after_ms / 1000.0)
                if e.status in (503, 504):  # this replica cannot help now
                    self._next_endpoint()
            except CONNECTION_ERRORS:
                if time.monotonic() > deadline:
                    raise
                self._next_endpoint()
            # Same body, same (client, request): the retry is exactly-once.
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    def read(self, key):
        """Local read on one replica: `{"key", "version", "value", ...}`.

        `value` is e.g. `{"Stock": 7}`, `{"Bytes": [104, 105]}` or None.
        It may lag the decisions that replica has not executed yet; put a
        `{"Get": {"key": ...}}` op in a decision for an ordered read.
        """
        path = "/v1/keys/" + urllib.parse.quote(key, safe="")
        for _ in range(len(self.endpoints)):
            try:
                return self._request("GET", path)
            except CONNECTION_ERRORS:
                self._next_endpoint()
        return self._request("GET", path)

    def status(self):
        return self._request("GET", "/v1/status")

    def follow(self, from_token="", switch_every=None, read_timeout=5.0, deadline=None):
        """Yields the committed stream's events, forever.

        Each event is a dict:
            {"instance": {"epoch": 0, "seq": 3, "origin": 1},
             "commands": [{"client": .., "request": .., "keys": [..],
                           "applied": true}],
             "token": "..."}

        `from_token` "" starts at the beginning of the stream. When the
        connection drops (or is idle for `read_timeout` s), the stream resumes
        on the next endpoint from the last event's token. A replica answering
        410 Gone no longer has the history the token lacks; another one may.
        `switch_every=N` deliberately hangs up after every N events (a test
        of the resumption). `deadline` (a time.monotonic() value) ends the
        generator with TimeoutError. Stop it by breaking out of the loop.
        """
        token = from_token
        failures = 0  # consecutive endpoints that did not serve us
        connections = 0
        problem = "none"  # why the last connection ended, for the error
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    "stream: deadline passed at token %r (last problem: %s)" % (token, problem)
                )
            path = "/v1/stream?from=" + urllib.parse.quote(token, safe="")
            url = "http://%s%s" % (self.endpoint, path)
            req = urllib.request.Request(url, headers={"accept": "text/event-stream"})
            served = 0
            try:
                with urllib.request.urlopen(req, timeout=read_timeout) as resp:
                    connections += 1
                    if connections > 1:
                        self.resumes += 1
                    for event in _sse_events(resp):
                        if event["type"] != "decision":
                            continue
                        ev = json.loads(event["data"])
                        token = ev["token"]
                        served += 1
                        failures = 0
                        yield ev
                        if switch_every and served >= switch_every:
                            break  # hang up on purpose; resume elsewhere
                        if deadline is not None and time.monotonic() > deadline:
                            break  # raised at the top of the loop
            except urllib.error.HTTPError as e:
                error = SynodError(e.code, _json_or_empty(e.read()))
                if e.code not in (410, 429, 503):
                    raise error from None
                problem = "%s answered %s" % (self.endpoint, error)
            except CONNECTION_ERRORS as e:
                problem = "%s: %r" % (self.endpoint, e)  # dropped or idle: resume below
            if served == 0:
                failures += 1
                if failures >= len(self.endpoints):
                    time.sleep(0.2)  # every endpoint failed once: breathe
            self._next_endpoint()


def _json_or_empty(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def _sse_events(resp):
    """Parses Server-Sent Events from a file-like HTTP response.

    Yields {"type": ..., "data": ...} per event; comment lines (":" first,
    used as keep-alives) are skipped. Chunked transfer encoding is undone by
    http.client.
    """
    etype, data = "message", []
    while True:
        raw = resp.readline()
        if not raw:
            return  # the server ended the stream
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                yield {"type": etype, "data": "\n".join(data)}
            etype, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                etype = value
            elif field == "data":
                data.append(value)


# ---------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------


def new_session_id():
    """A random session id, so reruns against the same cluster never reuse one."""
    return random.getrandbits(52) + 1


class Agent(threading.Thread):
    """A pricing agent: reads the stock (locally, approximate is fine for a
    quote), then reserves 1-3 units of a random SKU and records its quote in
    the same all-or-nothing decision, until every SKU is sold out."""

    def __init__(self, name, endpoints, skus, seed, patience):
        super().__init__(name=name)
        self.client = SynodClient(endpoints, patience=patience)
        self.session = new_session_id()
        self.request = 0
        self.skus = list(skus)
        self.rng = random.Random(seed)
        self.reserved = {sku: 0 for sku in skus}  # units, from Applied answers
        self.decisions = []  # (client, request, applied) of every answer
        self.error = None

    def run(self):
        try:
            self._trade()
        except Exception as e:  # reported by main
            self.error = e

    def _trade(self):
        open_skus = list(self.skus)
        while open_skus:
            sku = self.rng.choice(open_skus)
            stock = self.client.read(sku)["value"] or {"Stock": 0}
            price = 100 + 10 * max(0, 20 - stock.get("Stock", 0))  # scarcer: dearer
            qty = self.rng.randint(1, 3)
            quote = "%s quoted %d for %d" % (self.name, price, qty)
            self.request += 1
            answer = self.client.propose(
                [
                    {"Reserve": {"key": sku, "qty": qty}},
                    {"Put": {"key": "quote/" + sku, "value": list(quote.encode())}},
                ],
                client=self.session,
                request=self.request,
            )
            outcome = answer["outcome"]
            applied = "Applied" in outcome
            self.decisions.append((self.session, self.request, applied))
            if applied:
                self.reserved[sku] += qty
                continue
            failure = outcome["Rejected"]["reason"].get("OpFailed", {}).get("failure", {})
            short = failure.get("InsufficientStock")
            if short is None:
                raise RuntimeError("unexpected rejection: %r" % outcome)
            if short["available"] == 0:
                open_skus.remove(sku)  # sold out; other agents got the rest


def main(argv=None):
    try:
        return demo(argv)
    except (SynodError,) + CONNECTION_ERRORS as e:
        print("FAIL: the cluster did not answer: %s" % e)
        return 1


def demo(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--endpoints",
        default="127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
        help="comma-separated host:port of the replicas' HTTP API",
    )
    p.add_argument("--agents", type=int, default=3, help="pricing agents (threads)")
    p.add_argument("--stock", type=int, default=20, help="units per SKU")
    p.add_argument("--skus", type=int, default=2, help="number of SKUs")
    p.add_argument(
        "--switch-after",
        type=int,
        default=0,
        help="hang up the stream every N events and resume on the next endpoint",
    )
    p.add_argument("--seed", type=int, default=None, help="agents' random seed")
    p.add_argument("--timeout", type=float, default=45.0, help="seconds for the whole demo")
    args = p.parse_args(argv)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    deadline = time.monotonic() + args.timeout
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    run = "%06x" % random.getrandbits(24)  # fresh key names per run
    skus = ["sku-%s-%d" % (run, i) for i in range(args.skus)]

    # 1. Stock the SKUs in one decision (its own session).
    admin = SynodClient(endpoints, patience=args.timeout)
    admin_session = new_session_id()
    answer = admin.propose(
        [{"SetStock": {"key": sku, "qty": args.stock}} for sku in skus],
        client=admin_session,
        request=1,
    )
    assert "Applied" in answer["outcome"], answer
    print("stocked %s with %d units each (instance %s)" % (", ".join(skus), args.stock, answer["instance"]))
    mine = {(admin_session, 1): True}  # (client, request) -> applied

    # 2. The agents trade concurrently, each starting at another endpoint.
    agents = []
    for i in range(args.agents):
        rotated = endpoints[i % len(endpoints):] + endpoints[: i % len(endpoints)]
        agents.append(Agent("agent-%d" % i, rotated, skus, seed + i, args.timeout))
    for a in agents:
        a.start()
    for a in agents:
        a.join(max(0.0, deadline - time.monotonic()))
        if a.is_alive() or a.error:
            print("FAIL: %s: %s" % (a.name, a.error or "did not finish in time"))
            return 1
        mine.update({(c, r): applied for c, r, applied in a.decisions})
    reserved = {sku: sum(a.reserved[sku] for a in agents) for sku in skus}
    print("%d agents made %d decisions" % (len(agents), len(mine) - 1))

    # 3. An ordered read of what is left: a Get op inside a decision.
    answer = admin.propose([{"Get": {"key": sku}} for sku in skus], client=admin_session, request=2)
    left = {sku: r["Get"]["value"]["Stock"] for sku, r in zip(skus, answer["outcome"]["Applied"]["results"])}
    mine[(admin_session, 2)] = True

    # 4. Follow the committed stream until every own decision has shown up.
    seen_instances = set()
    applied_count = {}  # (client, request) -> times seen applied
    seen_count = {}  # (client, request) -> times seen at all
    per_key = {}  # key -> own decisions applied on it, from the stream
    duplicates = 0
    events = 0
    follower = SynodClient(endpoints)
    stream = follower.follow("", switch_every=args.switch_after or None, deadline=deadline)
    try:
        for ev in stream:
            events += 1
            inst = (ev["instance"]["epoch"], ev["instance"]["seq"], ev["instance"]["origin"])
            if inst in seen_instances:
                duplicates += 1
            seen_instances.add(inst)
            for cmd in ev["commands"]:
                pair = (cmd["client"], cmd["request"])
                if pair not in mine:
                    continue  # someone else's decision
                seen_count[pair] = seen_count.get(pair, 0) + 1
                if cmd["applied"]:
                    applied_count[pair] = applied_count.get(pair, 0) + 1
                    for key in cmd["keys"]:
                        if not key.startswith("\0"):  # skip session keys
                            per_key[key] = per_key.get(key, 0) + 1
            if all(pair in seen_count for pair in mine):
                break
    except TimeoutError as e:
        missing = [pair for pair in mine if pair not in seen_count]
        print("FAIL: %s; %d own decisions never streamed" % (e, len(missing)))
        return 1
    finally:
        stream.close()
    switches = follower.resumes
    print("stream: %d events, resumed %d times on another endpoint, ended on %s" % (events, switches, follower.endpoint))

    # 5. Per-key summary and the verdict.
    ok = True
    for sku in skus:
        consumed = args.stock - left[sku]
        line = "%s: stock %d, reserved %d, consumed %d, left %d, %d decisions applied (stream)" % (
            sku, args.stock, reserved[sku], consumed, left[sku], per_key.get(sku, 0))
        print(line)
        if reserved[sku] != consumed:
            print("  FAIL: reserved units != consumed stock")
            ok = False
    quotes = {k: v for k, v in per_key.items() if k.startswith("quote/")}
    for key in sorted(quotes):
        value = admin.read(key)["value"]
        text = bytes(value["Bytes"]).decode() if value else "?"
        print("%s: %d quotes applied, last: %s" % (key, quotes[key], text))
    if duplicates:
        print("FAIL: %d stream events were duplicates" % duplicates)
        ok = False
    for pair, applied in sorted(mine.items()):
        times = applied_count.get(pair, 0)
        if times != (1 if applied else 0):
            print("FAIL: decision %r (applied=%s) seen applied %d times" % (pair, applied, times))
            ok = False
    retried = sum(1 for n in seen_count.values() if n > 1)
    if not ok:
        return 1
    total = args.stock * len(skus)
    print(
        "OK: %d agents reserved %d of %d units; each of %d decisions streamed once "
        "(%d answered again after a retry), across %d stream resumptions" % (
            len(agents), sum(reserved.values()), total, len(mine), retried, switches)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
