#!/usr/bin/env python3
"""Probe which Kafka APIs Tansu serves correctly, per storage engine.

Starts its own Tansu brokers (memory and SQLite storage) on free ports in a
temporary directory, runs each check under its own deadline, prints a
Markdown table (or JSON with --json) and stops the brokers. It reports; it
does not assert: the exit code is 0 unless the probe itself crashes.

    python3 scripts/tansu-probe.py [--json]

The binary is $TANSU_BIN, else `tansu` from PATH. See docs/tansu.md.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CHECK_DEADLINE = 30.0  # seconds per check, hard: a hung check is abandoned
READ_WAIT = 8.0  # seconds to wait for records that may never come
MIB = 1024 * 1024


# --- brokers -----------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    def __init__(self, binary, engine, workdir):
        self.binary, self.engine, self.workdir = binary, engine, workdir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout=30.0):
        url = f"tcp://{self.bootstrap}"
        log = open(os.path.join(self.workdir, "tansu.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.engine, "--silent"],
            cwd=self.workdir,  # Tansu resolves a relative sqlite:// path against it
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self.workdir}/tansu.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not open port {self.port} within {timeout:.0f} s")
            time.sleep(0.05)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL, as a crash would
            self.proc.wait()


# --- check plumbing ----------------------------------------------------------

class Fail(Exception):
    """The broker answered, but wrongly: observed vs expected."""


class Ctx:
    def __init__(self, broker, deadline):
        self.broker, self.deadline, self.errors = broker, deadline, []
        self._admin = None

    def left(self, cap=None):
        t = max(0.1, self.deadline - time.monotonic())
        return min(t, cap) if cap else t

    def conf(self, **extra):
        c = {"bootstrap.servers": self.broker.bootstrap, "log_level": 0,
             "error_cb": lambda e: self.errors.append(str(e))}
        c.update({k.replace("_", "."): v for k, v in extra.items()})
        return c

    def admin(self):
        # Kept alive: a collected AdminClient fails its pending futures.
        if self._admin is None:
            self._admin = AdminClient(self.conf())
        return self._admin

    def topic(self, name, partitions=1, config=None):
        t = f"probe-{name}-{uuid.uuid4().hex[:8]}"
        fut = self.admin().create_topics([NewTopic(t, partitions, 1, config=config or {})])
        wait(fut[t], "CreateTopics", self)
        return t

    def produce(self, topic, records, **conf):
        """records: dicts of produce() kwargs. Returns the delivered messages."""
        delivered, failed = [], []
        p = Producer(self.conf(**{"linger_ms": 20, **conf}))
        cb = lambda err, msg: failed.append(err) if err else delivered.append(msg)
        for r in records:
            p.produce(topic, on_delivery=cb, **r)
            p.poll(0)
        left = p.flush(self.left())
        if failed or left:
            raise Fail(f"produce: {len(failed)} failed ({failed[:1]}), {left} undelivered")
        return delivered

    def consumer(self, group=None, **conf):
        return Consumer(self.conf(group_id=group or f"probe-{uuid.uuid4().hex[:8]}",
                                  enable_auto_commit=False, auto_offset_reset="earliest", **conf))

    def read(self, tps, want, wait=READ_WAIT):
        """Assign tps (with offsets) and read until `want` records or `wait` s."""
        c = self.consumer()
        c.assign(tps)
        got, end = [], time.monotonic() + min(wait, self.left())
        try:
            while len(got) < want and time.monotonic() < end:
                m = c.poll(0.2)
                if m is not None and not m.error():
                    got.append(m)
        finally:
            c.close()
        return got


def wait(fut, what, ctx, cap=10):
    """The result of a client future, or TimeoutError naming the call."""
    try:
        return fut.result(timeout=ctx.left(cap))
    except TimeoutError:
        raise TimeoutError(f"{what}: no answer within {cap} s") from None


def expect(what, observed, expected):
    if observed != expected:
        raise Fail(f"{what}: observed {observed}, expected {expected}")


def run_check(fn, broker, timeout):
    """Run fn(ctx) in a thread with a hard deadline; return (status, detail)."""
    ctx = Ctx(broker, time.monotonic() + timeout)
    out = {}

    def body():
        try:
            out["r"] = ("PASS", fn(ctx) or "")
        except Fail as e:
            out["r"] = ("FAIL", str(e))
        except KafkaException as e:  # an API error is a result
            out["r"] = ("ERROR", f"{e.args[0].name()}: {e.args[0].str()}")
        except Exception as e:  # noqa: BLE001
            out["r"] = ("ERROR", f"{type(e).__name__}: {e}")

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout + 5)
    if "r" not in out:
        return "ERROR", f"no answer within {timeout:.0f} s (hung); client errors: {ctx.errors[:2]}"
    status, detail = out["r"]
    if status == "ERROR" and ctx.errors:
        detail += f"; client errors: {ctx.errors[:2]}"
    return status, detail


# --- checks ------------------------------------------------------------------

def c01_create_topics(ctx):
    t = ctx.topic("create", 3)
    fut = ctx.admin().create_topics([NewTopic(t, 3, 1)])
    try:
        wait(fut[t], "second CreateTopics", ctx)
    except KafkaException as e:
        expect("second CreateTopics", e.args[0].name(), "TOPIC_ALREADY_EXISTS")
        return "created; second call: TOPIC_ALREADY_EXISTS"
    raise Fail("second CreateTopics: observed success, expected TOPIC_ALREADY_EXISTS")


def c02_produce_idempotent(ctx):
    t = ctx.topic("produce", 2)
    base = (int(time.time()) - 3600) * 1000
    n = 40
    sent = [dict(key=f"k{i % 7}".encode(), value=f"v{i}".encode(), timestamp=base + i * 1000,
                 headers=[("vigie-h", f"h{i}".encode()), ("n", str(i).encode())]) for i in range(n)]
    ctx.produce(t, sent, enable_idempotence=True, compression_type="zstd")
    got = ctx.read([TopicPartition(t, p, 0) for p in range(2)], n)
    expect("records read back", len(got), n)
    for m in got:
        i = int(m.value()[1:])
        s = sent[i]
        expect(f"record {i} key", m.key(), s["key"])
        expect(f"record {i} timestamp", m.timestamp(), (confluent_kafka.TIMESTAMP_CREATE_TIME, s["timestamp"]))
        expect(f"record {i} headers", m.headers(), s["headers"])
    return f"{n} records, zstd, idempotent: keys, timestamps, headers kept"


def c03_high_watermark(ctx):
    counts = [3, 10, 25, 62]
    t = ctx.topic("hwm", len(counts))
    ctx.produce(t, [dict(partition=p, value=b"x") for p, n in enumerate(counts) for _ in range(n)])
    c = ctx.consumer()
    try:
        seen = [c.get_watermark_offsets(TopicPartition(t, p), timeout=ctx.left(10), cached=False)[1]
                for p in range(len(counts))]
    finally:
        c.close()
    expect("high watermarks per partition", seen, counts)
    return f"high watermarks {seen}"


def c04_offsets_for_times(ctx):
    t = ctx.topic("bytime")
    base = (int(time.time()) - 3600) * 1000
    ctx.produce(t, [dict(partition=0, value=f"v{i}".encode(), timestamp=base + i * 1000) for i in range(10)])
    c = ctx.consumer()
    try:  # one query per request: librdkafka merges duplicate partitions
        seen = [c.offsets_for_times([TopicPartition(t, 0, base + ms)], timeout=ctx.left(10))[0].offset
                for ms in (5000, 7500, 60000)]
    finally:
        c.close()
    expect("offsets for the time of record 5, between 7 and 8, after the last", seen, [5, 8, -1])
    return f"offsets {seen}"


def c05_fetch_mid_batch(ctx):
    t = ctx.topic("midbatch")
    batch = dict(linger_ms=200, batch_num_messages=10000)
    ctx.produce(t, [dict(partition=0, value=f"v{i}".encode()) for i in range(250)], **batch)
    c = ctx.consumer()
    c.assign([TopicPartition(t, 0, 100)])
    got = []

    def read(want):
        end = time.monotonic() + min(READ_WAIT, ctx.left())
        while len(got) < want and time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m.offset())
        return (len(got), len(set(got)), min(got, default=None), max(got, default=None))

    try:
        first = read(150)
        # Then a second batch arrives, as it would in a live topic.
        ctx.produce(t, [dict(partition=0, value=f"v{i}".encode()) for i in range(250, 260)], **batch)
        second = read(160)
    finally:
        c.close()
    expect("records from offset 100 (count, distinct, first, last), then after 10 more in a new batch",
           (first, second), ((150, 150, 100, 249), (160, 160, 100, 259)))
    return "150 records 100..249, then 160 records 100..259"


def c06_group_two_members(ctx):
    t = ctx.topic("group", 4)
    g = f"probe-g-{uuid.uuid4().hex[:8]}"
    fast = dict(session_timeout_ms=10000, heartbeat_interval_ms=500)
    a, b = ctx.consumer(g, **fast), ctx.consumer(g, **fast)
    try:
        a.subscribe([t])
        while not a.assignment():
            if time.monotonic() > ctx.deadline - 1:
                raise Fail("first member: observed no assignment, expected 4 partitions")
            a.poll(0.2)
        b.subscribe([t])
        while True:
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            if pa and pb and not pa & pb and pa | pb == {0, 1, 2, 3}:
                return f"split {sorted(pa)} / {sorted(pb)}"
            if time.monotonic() > ctx.deadline - 1:
                raise Fail(f"assignments: observed {sorted(pa)} / {sorted(pb)}, "
                           "expected both non-empty, disjoint, covering 0..3")
            a.poll(0.1)
            b.poll(0.1)
    finally:
        a.close()
        b.close()


def c07_offset_commit_fetch(ctx):
    t = ctx.topic("commit", 2)
    ctx.produce(t, [dict(partition=p, value=b"x") for p in range(2) for _ in range(10)])
    g = f"probe-g-{uuid.uuid4().hex[:8]}"
    c = ctx.consumer(g)
    try:
        c.subscribe([t])
        while not c.assignment():
            if time.monotonic() > ctx.deadline - 1:
                raise Fail("observed no assignment, expected 2 partitions")
            c.poll(0.2)
        c.commit(offsets=[TopicPartition(t, 0, 4), TopicPartition(t, 1, 6)], asynchronous=False)
    finally:
        c.close()
    c = ctx.consumer(g)
    try:
        seen = [tp.offset for tp in c.committed([TopicPartition(t, 0), TopicPartition(t, 1)],
                                                timeout=ctx.left(10))]
    finally:
        c.close()
    expect("committed offsets read by a new consumer", seen, [4, 6])
    return f"committed {seen}"


def c08_restart(ctx):
    t = ctx.topic("restart")
    g = f"probe-g-{uuid.uuid4().hex[:8]}"
    ctx.produce(t, [dict(partition=0, value=f"v{i}".encode()) for i in range(30)])
    c = ctx.consumer(g)
    c.assign([TopicPartition(t, 0, 0)])
    c.commit(offsets=[TopicPartition(t, 0, 12)], asynchronous=False)
    c.close()
    ctx.broker.kill()
    ctx.broker.start(timeout=ctx.left(15))
    c = ctx.consumer(g)
    try:
        committed = c.committed([TopicPartition(t, 0)], timeout=ctx.left(10))[0].offset
        high = c.get_watermark_offsets(TopicPartition(t, 0), timeout=ctx.left(10), cached=False)[1]
    finally:
        c.close()
    got = ctx.read([TopicPartition(t, 0, committed)], 30 - 12)
    values = [m.value().decode() for m in got]
    expect("after kill -9 and restart: committed, high watermark, records from committed",
           (committed, high, values), (12, 30, [f"v{i}" for i in range(12, 30)]))
    return "committed 12, high watermark 30, records 12..29 back"


def fetch_child(bootstrap, topic):
    """Child process of check 9: read a topic, then keep fetching it for 4 s."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "log_level": 0})
    c.assign([TopicPartition(topic, 0, 0)])
    n, end = 0, time.monotonic() + READ_WAIT
    while n < 5 and time.monotonic() < end:
        n += c.poll(0.2) is not None
    print(n, flush=True)  # the parent deletes topics now
    end = time.monotonic() + 4
    while time.monotonic() < end:
        c.poll(0.1)
    os._exit(0)  # skip close(): only the fetching matters here


def c09_delete_topics(ctx):
    admin = ctx.admin()
    victim, other = ctx.topic("delete"), ctx.topic("delete-other")
    for t in (victim, other):
        ctx.produce(t, [dict(partition=0, value=b"x")] * 5)
    # A consumer fetches `other` throughout, in a child process since it may crash.
    child = subprocess.Popen([sys.executable, __file__, "--fetch-child", ctx.broker.bootstrap, other],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        read = child.stdout.readline().strip()  # the child bounds its own wait
        wait(admin.delete_topics([victim], operation_timeout=5)[victim], "DeleteTopics", ctx)
        topics = admin.list_topics(timeout=ctx.left(10)).topics
        seen = [victim in topics, other in topics]
        if seen[1]:  # now delete the topic the consumer is fetching
            wait(admin.delete_topics([other], operation_timeout=5)[other], "DeleteTopics (fetched)", ctx)
        try:
            rc = child.wait(timeout=ctx.left(10))
            seen.append("SIGSEGV" if rc == -signal.SIGSEGV else rc)
        except subprocess.TimeoutExpired:
            seen.append("hung")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    try:
        ctx.topic("after-delete")
        seen.append("serves")
    except Exception as e:  # noqa: BLE001
        seen.append(f"CreateTopics fails ({e})")
    expect(f"after deleting 1 of 2 topics, then the 2nd while a consumer fetches it (read {read}/5): "
           "(1st listed, 2nd listed, consumer exit, broker)", tuple(seen), (False, True, 0, "serves"))
    return "deleted one topic, the other intact; deleted the fetched one; consumer and broker fine"


def c10_delete_records(ctx):
    t = ctx.topic("delrec")
    ctx.produce(t, [dict(partition=0, value=b"x")] * 10)
    tp = TopicPartition(t, 0, 5)
    res = wait(ctx.admin().delete_records([tp], request_timeout=10)[tp], "DeleteRecords", ctx)
    expect("low watermark after DeleteRecords before offset 5", res.low_watermark, 5)
    return "low watermark 5"


def c11_transactions(ctx):
    t = ctx.topic("txn")
    p = Producer(ctx.conf(transactional_id=f"probe-tx-{uuid.uuid4().hex[:8]}"))
    p.init_transactions(ctx.left(10))
    p.begin_transaction()
    for i in range(5):
        p.produce(t, value=f"v{i}".encode(), partition=0)
    p.commit_transaction(ctx.left(10))
    c = ctx.consumer(isolation_level="read_committed")
    c.assign([TopicPartition(t, 0, 0)])
    got, end = [], time.monotonic() + ctx.left(READ_WAIT)
    try:
        while len(got) < 5 and time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
    finally:
        c.close()
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
SQLITE_ONLY = {8}  # memory storage does not persist by design


# --- main --------------------------------------------------------------------

def tansu_binary():
    b = os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if not b:
        sys.exit("tansu not found: put it on PATH or set TANSU_BIN")
    return b


def serves(broker):
    """True if the broker still answers a Metadata request."""
    if not port_open(broker.port):
        return False
    try:
        AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0}).list_topics(timeout=5)
        return True
    except KafkaException:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    ap.add_argument("--fetch-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fetch_child:
        fetch_child(*args.fetch_child)
    binary = tansu_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the finally below runs

    results, brokers = [], []
    with tempfile.TemporaryDirectory(prefix="tansu-probe-") as tmp:
        try:
            for engine in ("memory://tansu/", "sqlite://probe.db"):
                label = engine.split(":")[0]
                workdir = os.path.join(tmp, label)
                os.mkdir(workdir)
                broker = Broker(binary, engine, workdir)
                brokers.append(broker)
                broker.start()
                for n, name, fn in CHECKS:
                    t0 = time.monotonic()
                    if n in SQLITE_ONLY and label != "sqlite":
                        status, detail = "N/A", "memory storage does not persist"
                    else:
                        status, detail = run_check(fn, broker, CHECK_DEADLINE)
                        if not serves(broker):  # isolate the next checks from this one
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

    results.sort(key=lambda r: (r["number"], r["engine"]))
    client = f"confluent_kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    if args.json:
        print(json.dumps(dict(tansu=version, client=client, results=results), indent=2))
    else:
        print(f"Broker: {version}. Client: {client}.\n")
        print("| # | Check | Engine | Result | Detail |")
        print("|---|-------|--------|--------|--------|")
        for r in results:
            detail = r["detail"].replace("|", "\\|").replace("\n", " ")
            print(f"| {r['number']} | {r['check']} | {r['engine']} | {r['status']} | {detail} |")
    sys.stdout.flush()
    # A hung check leaves a daemon thread inside librdkafka; do not wait for it.
    os._exit(0)


if __name__ == "__main__":
    main()
