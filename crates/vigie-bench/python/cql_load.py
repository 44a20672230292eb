"""The Python baseline of the `sink-scylla` benchmark, and its CQL chores.

    cql_load.py schema HOST PORT KEYSPACE SCHEMA_FILE
        creates KEYSPACE (NetworkTopologyStrategy, datacenter1: 1) and the
        tables of SCHEMA_FILE in it
    cql_load.py load HOST PORT KEYSPACE CSV CONCURRENCY
        what a data engineer would write with the Python cassandra-driver:
        the rows of CSV (cqlsh COPY TO of health_case_by_state_month, with
        a header) inserted with one prepared statement, the same as the
        sink's (USING TTL ? AND TIMESTAMP ?, the version as write
        timestamp), by execute_concurrent_with_args at CONCURRENCY
        requests in flight, consistency LOCAL_QUORUM; prints the rows
    cql_load.py count HOST PORT KEYSPACE
        prints the rows of health_case_by_state_month
    cql_load.py drop HOST PORT KEYSPACE
"""

import csv
import sys
import time
import uuid
from datetime import date, datetime, timezone

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args

TABLE = "health_case_by_state_month"
INTS = {"bucket", "case_positive_specimen_interval", "case_onset_interval"}
TIMESTAMPS = {"occurred_at", "ingested_at", "upstream_updated_at"}


def session(host, port, keyspace=None):
    profile = ExecutionProfile(
        consistency_level=ConsistencyLevel.LOCAL_QUORUM, request_timeout=600
    )
    cluster = Cluster(
        [host], port=int(port), execution_profiles={EXEC_PROFILE_DEFAULT: profile}
    )
    return cluster, cluster.connect(keyspace)


def value(column, text):
    if text == "":
        return None
    if column in INTS:
        return int(text)
    if column == "event_id":
        return uuid.UUID(text)
    if column == "case_month":
        return date.fromisoformat(text)
    if column in TIMESTAMPS:
        return datetime.fromisoformat(text)
    return text


def micros(t):
    return int(t.astimezone(timezone.utc).timestamp() * 1_000_000)


def rows(path, columns):
    """The CSV's rows as bound values: the columns, then TTL 0 and the
    version (upstream version, else ingestion time) as write timestamp."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        at = {c: i for i, c in enumerate(header)}
        for line in reader:
            values = [value(c, line[at[c]]) for c in columns]
            row = dict(zip(columns, values))
            version = row["upstream_updated_at"] or row["ingested_at"]
            yield values + [0, micros(version)]


def main(argv):
    command, host, port, keyspace = argv[1:5]
    if command == "schema":
        cluster, s = session(host, port)
        s.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
            "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
        )
        s.set_keyspace(keyspace)
        text = open(argv[5]).read()
        body = "\n".join(
            line for line in text.splitlines() if not line.strip().startswith("--")
        )
        for statement in body.split(";"):
            if statement.strip():
                s.execute(statement)
    elif command == "load":
        csv_path, concurrency = argv[5], int(argv[6])
        cluster, s = session(host, port, keyspace)
        columns = [
            c.name for c in cluster.metadata.keyspaces[keyspace].tables[TABLE].columns.values()
        ]
        marks = ", ".join("?" for _ in columns)
        insert = s.prepare(
            f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({marks}) "
            "USING TTL ? AND TIMESTAMP ?"
        )
        insert.is_idempotent = True
        written = 0
        for ok, result in execute_concurrent_with_args(
            s,
            insert,
            rows(csv_path, columns),
            concurrency=concurrency,
            raise_on_first_error=True,
            results_generator=True,
        ):
            written += 1
        print(written)
    elif command == "count":
        cluster, s = session(host, port, keyspace)
        # By token range, 64 of them: one count(*) over 10^6 rows (and the
        # tombstones of their null columns) outlasts the node's range
        # request timeout on a loaded machine.
        key = "token(res_state, case_month, bucket)"
        lo, hi, parts = -(2**63), 2**63 - 1, 64
        bounds = [lo + i * ((hi - lo) // parts) for i in range(parts)] + [hi]
        total = 0
        for i in range(parts):
            first = ">=" if i == 0 else ">"
            total += s.execute(
                f"SELECT count(*) FROM {TABLE} WHERE {key} {first} {bounds[i]} "
                f"AND {key} <= {bounds[i + 1]}",
                timeout=60,
            ).one()[0]
        print(total)
    elif command == "idle":
        # Until the node runs no compaction: each side starts on an idle
        # node, not on the previous side's compactions.
        cluster, s = session(host, port)
        deadline, quiet = time.monotonic() + 300, 0
        while quiet < 2 and time.monotonic() < deadline:
            tasks = s.execute("SELECT count(*) FROM system_views.sstable_tasks").one()[0]
            quiet = quiet + 1 if tasks == 0 else 0
            time.sleep(0.5)
        print(quiet >= 2)
    elif command == "drop":
        cluster, s = session(host, port)
        s.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    else:
        sys.exit(f"unknown command {command}")
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv)
