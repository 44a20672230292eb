#!/usr/bin/env python3
"""Probe which Kafka APIs Tansu serves correctly, per storage engine.

Starts its own Tansu brokers (memory and SQLite storage) on free ports in a
temporary directory, runs each check under its own deadline, prints a
Markdown table (or JSON with --json) and kills the brokers. It reports, it
does not assert: the exit code is 0 unless the probe itself crashes.

    python3 scripts/tansu-probe.py [--json]

The broker binary is $TANSU_BIN, else `tansu` on the PATH. See docs/tansu.md.
"""

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CHECK_DEADLINE = 30.0  # seconds per check; a check still running then is abandoned
READ_WAIT = 8.0  # seconds to wait for records that may never come
MIB = 1024 * 1024


# --- brokers -----------------------------------------------------------------

def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def die_with_parent():
    """In a broker child: get SIGKILL if the probe dies, even by a signal (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Broker:
    def __init__(self, binary, engine, workdir):
        self.binary, self.engine, self.workdir = binary, engine, workdir
        with socket.socket() as s:  # a free port
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc, self.log_seen = None, 0

    def start(self, timeout=30.0):
        url = f"tcp://{self.bootstrap}"
        # The death signal follows the thread that started the broker; only main lasts.
        on_main = threading.current_thread() is threading.main_thread()
        with open(os.path.join(self.workdir, "tansu.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", self.engine, "--silent"],
                cwd=self.workdir,  # Tansu resolves a relative sqlite:// path against it
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent if on_main else None)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu ({self.engine}) did not open port {self.port}")
            time.sleep(0.05)

    def panics(self):
        """Panic messages the broker logged since the last call."""
        with open(os.path.join(self.workdir, "tansu.log"), errors="replace") as f:
            f.seek(self.log_seen)
            lines, self.log_seen = f.read().splitlines(), f.tell()
        where = (re.search(r"panicked at .*/([^/]+/src/[^:]+:\d+)", ln) for ln in lines)
        return [f"{m[1]} ({nxt})" for m, nxt in zip(where, lines[1:]) if m]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL, as a crash would
            self.proc.wait()


# --- check plumbing ----------------------------------------------------------

class Fail(Exception):
    """The broker answered, but wrongly: observed vs expected."""


def expect(what, observed, expected):
    if observed != expected:
        raise Fail(f"{what}: observed {observed}, expected {expected}")


def poll(c, want, seconds, got=None):
    """Records from consumer c until there are `want` of them or `seconds` passed."""
    got, end = [] if got is None else got, time.monotonic() + seconds
    while len(got) < want and time.monotonic() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m)
    return got


class Ctx:
    """What a check gets: its broker, its deadline, client helpers."""

    def __init__(self, broker, deadline):
        self.broker, self.deadline, self._admin = broker, deadline, None

    def left(self, cap=None):
        t = max(0.1, self.deadline - time.monotonic())
        return min(t, cap) if cap else t

    def conf(self, **extra):
        return {"bootstrap.servers": self.broker.bootstrap, "log_level": 0,
                **{k.replace("_", "."): v for k, v in extra.items()}}

    def wait(self, fut, what, cap=10):
        """The result of a client future, or TimeoutError naming the call."""
        try:
            return fut.result(timeout=self.left(cap))
        except TimeoutError:
            raise TimeoutError(f"{what}: no answer within {cap} s") from None

    def admin(self):
        if self._admin is None:  # kept: a collected AdminClient fails its futures
            self._admin = AdminClient(self.conf())
        return self._admin

    def topic(self, name, partitions=1, config=None):
        t = f"probe-{name}-{uuid.uuid4().hex[:8]}"
        fut = self.admin().create_topics([NewTopic(t, partitions, 1, config=config or {})])
        self.wait(fut[t], "CreateTopics")
        return t

    def produce(self, topic, records, **conf):
        """records: dicts of Producer.produce() arguments; all must be delivered."""
        failed = []
        p = Producer(self.conf(**{"linger_ms": 20, **conf}))
        for r in records:
            p.produce(topic, on_delivery=lambda err, _: err and failed.append(err), **r)
            p.poll(0)
        left = p.flush(self.left())
        if failed or left:
            raise Fail(f"produce: {len(failed)} failed ({failed[:1]}), {left} undelivered")

    def consumer(self, group=None, **conf):
        return closing(Consumer(self.conf(
            group_id=group or f"probe-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
            auto_offset_reset="earliest", **conf)))

    def read(self, tps, want, **conf):
        """Assign tps (with offsets); read until `want` records or READ_WAIT s."""
        with self.consumer(**conf) as c:
            c.assign(tps)
            return poll(c, want, self.left(READ_WAIT))

    def high(self, c, topic, partition):
        return c.get_watermark_offsets(TopicPartition(topic, partition),
                                       timeout=self.left(10), cached=False)[1]

    def assigned(self, c):
        """Poll a subscribed consumer until it owns partitions."""
        while not c.assignment():
            if time.monotonic() > self.deadline - 1:
                raise Fail("observed no partitions assigned, expected some")
            c.poll(0.2)


def run_check(fn, broker, timeout):
    """Run fn(ctx) in a thread with a hard deadline; return (status, detail)."""
    ctx, out = Ctx(broker, time.monotonic() + timeout), {}

    def body():
        try:
            out["r"] = ("PASS", fn(ctx))
        except Fail as e:
            out["r"] = ("FAIL", str(e))
        except KafkaException as e:  # an API error is a result
            out["r"] = ("ERROR", f"{e.args[0].name()}: {e.args[0].str()}")
        except Exception as e:  # noqa: BLE001
            out["r"] = ("ERROR", f"{type(e).__name__}: {e}")

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout + 5)
    return out.get("r", ("ERROR", f"no answer within {timeout:.0f} s (hung)"))


# --- checks ------------------------------------------------------------------

def c01_create_topics(ctx):
    t = ctx.topic("create", 3)
    try:
        ctx.wait(ctx.admin().create_topics([NewTopic(t, 3, 1)])[t], "second CreateTopics")
    except KafkaException as e:
        expect("second CreateTopics", e.args[0].name(), "TOPIC_ALREADY_EXISTS")
        return "created; second call: TOPIC_ALREADY_EXISTS"
    raise Fail("second CreateTopics: observed success, expected TOPIC_ALREADY_EXISTS")


def c02_produce_idempotent(ctx):
    t, n = ctx.topic("produce", 2), 40
    base = (int(time.time()) - 3600) * 1000
    sent = [dict(key=f"k{i % 7}".encode(), value=str(i).encode(), timestamp=base + i * 1000,
                 headers=[("vigie-h", f"h{i}".encode()), ("n", str(i).encode())]) for i in range(n)]
    ctx.produce(t, sent, enable_idempotence=True, compression_type="zstd")
    got = ctx.read([TopicPartition(t, p, 0) for p in range(2)], n)
    expect("records read back", len(got), n)
    for m in got:
        s = sent[int(m.value())]
        expect("(key, timestamp, headers)", (m.key(), m.timestamp(), m.headers()),
               (s["key"], (confluent_kafka.TIMESTAMP_CREATE_TIME, s["timestamp"]), s["headers"]))
    return f"{n} records, zstd, idempotent: keys, timestamps, headers kept"


def c03_high_watermark(ctx):
    counts = [3, 10, 25, 62]
    t = ctx.topic("hwm", len(counts))
    ctx.produce(t, [dict(partition=p, value=b"x") for p, n in enumerate(counts) for _ in range(n)])
    with ctx.consumer() as c:
        seen = [ctx.high(c, t, p) for p in range(len(counts))]
    expect("high watermarks per partition", seen, counts)
    return f"high watermarks {seen}"


def c04_offsets_for_times(ctx):
    t = ctx.topic("bytime")
    base = (int(time.time()) - 3600) * 1000
    ctx.produce(t, [dict(partition=0, value=b"x", timestamp=base + i * 1000) for i in range(10)])
    with ctx.consumer() as c:  # one query per call: librdkafka merges duplicate partitions
        seen = [c.offsets_for_times([TopicPartition(t, 0, base + ms)], timeout=ctx.left(10))[0]
                .offset for ms in (5000, 7500, 60000)]
    expect("offsets for the time of record 5, between 7 and 8, after the last", seen, [5, 8, -1])
    return f"offsets {seen}"


def c05_fetch_mid_batch(ctx):
    t, got = ctx.topic("midbatch"), []
    one_batch = dict(linger_ms=200, batch_num_messages=10000)
    ctx.produce(t, [dict(partition=0, value=b"x")] * 250, **one_batch)

    def summary():  # (count, distinct, first, last)
        o = [m.offset() for m in got]
        return (len(o), len(set(o)), min(o, default=None), max(o, default=None))

    with ctx.consumer() as c:
        c.assign([TopicPartition(t, 0, 100)])
        poll(c, 150, ctx.left(READ_WAIT), got)
        first = summary()
        ctx.produce(t, [dict(partition=0, value=b"y")] * 10, **one_batch)  # a live topic grows
        poll(c, 160, ctx.left(READ_WAIT), got)
    expect("records read from offset 100 (count, distinct, first, last), then after 10 more "
           "in a new batch", (first, summary()), ((150, 150, 100, 249), (160, 160, 100, 259)))
    return "150 records 100..249, then 160 records 100..259"


def c06_group_two_members(ctx):
    t, g = ctx.topic("group", 4), f"probe-g-{uuid.uuid4().hex[:8]}"
    fast = dict(session_timeout_ms=10000, heartbeat_interval_ms=500)
    with ctx.consumer(g, **fast) as a, ctx.consumer(g, **fast) as b:
        a.subscribe([t])
        ctx.assigned(a)
        b.subscribe([t])
        while True:
            pa, pb = ({tp.partition for tp in x.assignment()} for x in (a, b))
            if pa and pb and not pa & pb and pa | pb == {0, 1, 2, 3}:
                return f"split {sorted(pa)} / {sorted(pb)}"
            if time.monotonic() > ctx.deadline - 1:
                raise Fail(f"assignments: observed {sorted(pa)} / {sorted(pb)}, "
                           "expected both non-empty, disjoint, covering 0..3")
            a.poll(0.1)
            b.poll(0.1)


def c07_offset_commit_fetch(ctx):
    t, g = ctx.topic("commit", 2), f"probe-g-{uuid.uuid4().hex[:8]}"
    ctx.produce(t, [dict(partition=p, value=b"x") for p in range(2) for _ in range(10)])
    with ctx.consumer(g) as c:
        c.subscribe([t])
        ctx.assigned(c)
        c.commit(offsets=[TopicPartition(t, 0, 4), TopicPartition(t, 1, 6)], asynchronous=False)
    with ctx.consumer(g) as c:
        tps = c.committed([TopicPartition(t, 0), TopicPartition(t, 1)], timeout=ctx.left(10))
    seen = [tp.offset for tp in tps]
    expect("committed offsets read by a new consumer", seen, [4, 6])
    return f"committed {seen}"


def c08_restart(ctx):
    t, g = ctx.topic("restart"), f"probe-g-{uuid.uuid4().hex[:8]}"
    ctx.produce(t, [dict(partition=0, value=str(i).encode()) for i in range(30)])
    with ctx.consumer(g) as c:
        c.commit(offsets=[TopicPartition(t, 0, 12)], asynchronous=False)
    ctx.broker.kill()
    ctx.broker.start(timeout=ctx.left(15))
    with ctx.consumer(g) as c:
        committed = c.committed([TopicPartition(t, 0)], timeout=ctx.left(10))[0].offset
        high = ctx.high(c, t, 0)
    values = [int(m.value()) for m in ctx.read([TopicPartition(t, 0, committed)], 30 - 12)]
    expect("after kill -9 and restart: committed offset, high watermark, records from it",
           (committed, high, values), (12, 30, list(range(12, 30))))
    return "committed 12, high watermark 30, records 12..29 back"


def fetch_child(bootstrap, topic):
    """Check 9, in a child process: read a topic, then keep fetching it for 4 s."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "log_level": 0})
    c.assign([TopicPartition(topic, 0, 0)])
    print(len(poll(c, 5, READ_WAIT)), flush=True)  # the parent deletes topics now
    poll(c, 10**9, 4)
    os._exit(0)  # no close(): only the fetching matters


def c09_delete_topics(ctx):
    admin, first, second = ctx.admin(), ctx.topic("delete"), ctx.topic("delete-other")
    ctx.wait(admin.delete_topics([first], operation_timeout=5)[first], "DeleteTopics")
    topics = admin.list_topics(timeout=ctx.left(10)).topics
    seen = [first in topics, second in topics]
    # Then delete a topic a consumer is fetching. The consumer runs in a child
    # process, as it may crash; it exits by itself within READ_WAIT + 4 s.
    fetched = ctx.topic("delete-fetched")
    ctx.produce(fetched, [dict(partition=0, value=b"x")] * 5)
    cmd = [sys.executable, __file__, "--fetch-child", ctx.broker.bootstrap, fetched]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    read = child.stdout.readline().strip()
    ctx.wait(admin.delete_topics([fetched], operation_timeout=5)[fetched], "DeleteTopics")
    rc = child.wait(timeout=ctx.left(10))
    seen.append("SIGSEGV" if rc == -signal.SIGSEGV else rc)
    try:
        ctx.topic("after-delete")
        seen.append("serves")
    except Exception as e:  # noqa: BLE001
        seen.append(f"CreateTopics fails ({e})")
    expect(f"(deleted topic listed, other topic listed; after deleting a topic a consumer fetches "
           f"(it read {read}/5): consumer exit, broker)", tuple(seen), (False, True, 0, "serves"))
    return "deleted topic gone, other kept; deleting a fetched topic: consumer and broker fine"


def c10_delete_records(ctx):
    t = ctx.topic("delrec")
    ctx.produce(t, [dict(partition=0, value=b"x")] * 10)
    tp = TopicPartition(t, 0, 5)
    res = ctx.wait(ctx.admin().delete_records([tp], request_timeout=10)[tp], "DeleteRecords")
    expect("low watermark after DeleteRecords before offset 5", res.low_watermark, 5)
    return "low watermark 5"


def c11_transactions(ctx):
    t = ctx.topic("txn")
    p = Producer(ctx.conf(transactional_id=f"probe-tx-{uuid.uuid4().hex[:8]}"))
    p.init_transactions(ctx.left(10))
    p.begin_transaction()
    for _ in range(5):
        p.produce(t, value=b"x", partition=0)
    p.commit_transaction(ctx.left(10))
    got = ctx.read([TopicPartition(t, 0, 0)], 5, isolation_level="read_committed")
    expect("committed transactional records read (read_committed)", len(got), 5)
    return "init / begin / commit; 5 records read_committed"


def c12_large_message(ctx):
    t = ctx.topic("large", config={"max.message.bytes": str(4 * MIB)})
    value = os.urandom(2 * MIB)
    ctx.produce(t, [dict(partition=0, value=value)], message_max_bytes=3 * MIB)
    got = ctx.read([TopicPartition(t, 0, 0)], 1)
    expect("2 MiB record read back intact", bool(got) and got[0].value() == value, True)
    return "2 MiB record written and read back"


CHECKS = [  # (number, name, function)
    (1, "CreateTopics; again -> TOPIC_ALREADY_EXISTS", c01_create_topics),
    (2, "Idempotent zstd produce: keys, timestamps, headers kept", c02_produce_idempotent),
    (3, "ListOffsets latest (high watermark) per partition", c03_high_watermark),
    (4, "ListOffsets by timestamp (offsets_for_times)", c04_offsets_for_times),
    (5, "Fetch from an offset inside a record batch", c05_fetch_mid_batch),
    (6, "Consumer group, two members split partitions", c06_group_two_members),
    (7, "OffsetCommit / OffsetFetch", c07_offset_commit_fetch),
    (8, "Offsets and records survive kill -9 + restart", c08_restart),
    (9, "DeleteTopics", c09_delete_topics),
    (10, "DeleteRecords", c10_delete_records),
    (11, "Transactions (init / begin / commit)", c11_transactions),
    (12, "2 MiB message (message.max.bytes raised)", c12_large_message),
]
SQLITE_ONLY = {8}  # memory storage does not persist, by design


# --- main --------------------------------------------------------------------

def serves(broker):
    """True if the broker still answers a Metadata request."""
    try:
        AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0}).list_topics(timeout=5)
        return True
    except KafkaException:
        return False


def probe(binary, tmp):
    results, brokers = [], []
    try:
        for engine in ("memory://tansu/", "sqlite://probe.db"):
            label = engine.split(":")[0]
            os.mkdir(os.path.join(tmp, label))
            broker = Broker(binary, engine, os.path.join(tmp, label))
            brokers.append(broker)
            broker.start()
            for n, name, fn in CHECKS:
                t0 = time.monotonic()
                if n in SQLITE_ONLY and label != "sqlite":
                    status, detail = "N/A", "memory storage does not persist"
                else:
                    status, detail = run_check(fn, broker, CHECK_DEADLINE)
                    if panics := broker.panics():
                        detail += f"; broker panicked: {'; '.join(sorted(set(panics)))}"
                    if not serves(broker):  # keep the next checks independent of this one
                        detail += "; afterwards the broker no longer served Metadata (restarted it)"
                        status = "FAIL" if status == "PASS" else status
                        broker.kill()
                        broker.start()
                secs = round(time.monotonic() - t0, 1)
                print(f"[{label}] {n:2} {status:5} {secs:5.1f}s {detail}", file=sys.stderr)
                results.append(dict(number=n, check=name, engine=label, status=status,
                                    detail=detail, seconds=secs))
    finally:
        for b in brokers:
            b.kill()
    return sorted(results, key=lambda r: (r["number"], r["engine"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    ap.add_argument("--fetch-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fetch_child:
        fetch_child(*args.fetch_child)
    binary = shutil.which(os.environ.get("TANSU_BIN") or "tansu")
    if not binary:
        sys.exit("tansu not found: set TANSU_BIN or put tansu on the PATH")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally that kills brokers
    with tempfile.TemporaryDirectory(prefix="tansu-probe-") as tmp:
        results = probe(binary, tmp)
    client = (f"confluent_kafka {confluent_kafka.__version__}, "
              f"librdkafka {confluent_kafka.libversion()[0]}")
    if args.json:
        print(json.dumps(dict(tansu=version, client=client, results=results), indent=2))
    else:
        print(f"Broker: {version}. Client: {client}.\n")
        print("| # | Check | Engine | Result | Detail |\n|---|---|---|---|---|")
        for r in results:
            detail = r["detail"].replace("|", "\\|")
            print(f"| {r['number']} | {r['check']} | {r['engine']} | {r['status']} | {detail} |")
    sys.stdout.flush()
    os._exit(0)  # an abandoned check may still sit in librdkafka: do not wait for it


if __name__ == "__main__":
    main()
