# Shared helpers of the Vigie scripts (sourced, not run).
# State lives in .vigie/ at the top of the checkout (git-ignored).

set -euo pipefail

VIGIE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIGIE_STATE="${VIGIE_STATE:-$VIGIE_ROOT/.vigie}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$VIGIE_ROOT/infra/kafka/pom.xml")"
KAFKA_LIBS="$VIGIE_STATE/kafka-libs"
DEBEZIUM_VERSION="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$VIGIE_ROOT/infra/kafka-connect/pom.xml")"
# Kafka Connect's plugin.path: one folder per plugin.
CONNECT_PLUGINS="$VIGIE_STATE/connect-plugins"
CASSANDRA_VERSION="$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$VIGIE_ROOT/infra/cassandra/pom.xml")"
CASSANDRA_LIBS="$VIGIE_STATE/cassandra-libs"
CONFLUENT_KAFKA_VERSION="2.16.0"
ONNXRUNTIME_VERSION="1.32.0"
NUMPY_VERSION="2.4.6"
CARGO_DENY_VERSION="0.20.2"
CARGO_FUZZ_VERSION="0.13.2"
# Command-line tools installed by scripts/setup (cargo-deny, cargo-fuzz), in bin/.
VIGIE_TOOLS="$VIGIE_STATE/tools"
export PATH="$VIGIE_TOOLS/bin:$HOME/.cargo/bin:$PATH"
mkdir -p "$VIGIE_STATE"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# kafka_java CLASS ARGS... — runs a class of Apache Kafka's jars (tools log
# warnings and errors only, to stderr).
kafka_java() {
  java -Xmx512m -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$VIGIE_ROOT/infra/kafka/log4j2-tools.yaml" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# cql_tools — prints the python of .vigie/cql-venv, where cqlsh and the
# Python cassandra-driver (PyPI) are installed for the sink-scylla benchmark
# (made, or made again, when they are not the versions below).
CQLSH_VERSION="6.2.2"
CASSANDRA_DRIVER_VERSION="3.30.1"
cql_tools() {
  local venv="$VIGIE_STATE/cql-venv"
  if ! "$venv/bin/python" -c "import cassandra, sys; sys.exit(cassandra.__version__ != '$CASSANDRA_DRIVER_VERSION')" 2>/dev/null \
    || [[ "$("$venv/bin/pip" show cqlsh 2>/dev/null | sed -n 's/^Version: //p')" != "$CQLSH_VERSION" ]]; then
    say "pip install cqlsh==$CQLSH_VERSION cassandra-driver==$CASSANDRA_DRIVER_VERSION into $venv"
    python3 -m venv "$venv" >&2 \
      && "$venv/bin/pip" install -q --disable-pip-version-check \
        "cqlsh==$CQLSH_VERSION" "cassandra-driver==$CASSANDRA_DRIVER_VERSION" >&2 \
      || die "could not install cqlsh and cassandra-driver into $venv"
  fi
  echo "$venv/bin/python"
}

# kafka_jvm — the java that runs the Kafka broker: $KAFKA_JAVA, else the
# newest JDK (17 or later) installed under /usr/lib/jvm, else `java`. The
# broker decrypts TLS at about half the CPU cost on JDK 25 that it does on
# 17 (docs/benchmarks.md, tls).
kafka_jvm() {
  if [[ -n "${KAFKA_JAVA:-}" ]]; then echo "$KAFKA_JAVA"; return 0; fi
  local rel v best=java best_v=0
  for rel in /usr/lib/jvm/*/release; do
    v=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$rel" 2>/dev/null)
    [[ "$v" =~ ^[0-9]+$ && -x "${rel%release}bin/java" ]] || continue
    if ((v >= 17 && v > best_v)); then best_v=$v best="${rel%release}bin/java"; fi
  done
  echo "$best"
}

# wait_port HOST:PORT SECONDS — wait for a TCP port to accept connections
# (tried at least once: `wait_port ADDR 0` asks whether it accepts now).
wait_port() {
  local hp=$1 secs=$2 i
  for ((i = 0; ; i++)); do
    if (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null; then return 0; fi
    ((i < secs * 10)) || return 1
    sleep 0.1
  done
}

# need_nightly — dies with a clear message when the nightly toolchain
# (cargo fuzz's -Z flags) or cargo-fuzz is missing: only what fuzzes needs
# them (scripts/fuzz, the fuzz step of scripts/test).
need_nightly() {
  rustup run nightly rustc --version >/dev/null 2>&1 \
    || die "fuzzing needs the nightly toolchain, which scripts/setup could not install: run 'rustup toolchain install nightly --profile minimal' where rustup reaches its server"
  [[ "$(cargo-fuzz --version 2>/dev/null)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]] \
    || die "no cargo-fuzz $CARGO_FUZZ_VERSION on the PATH: run scripts/setup"
}

# local_tls DIR — a CA of this checkout's own (DIR/ca.pem, ca.key) and a
# server certificate it signed for localhost and 127.0.0.1 (DIR/server.crt,
# server.key), made with openssl unless DIR already holds a pair that
# verifies. Returns 1 when it had nothing to make, so that callers install
# what it made only once.
local_tls() {
  local d=$1
  if openssl verify -CAfile "$d/ca.pem" "$d/server.crt" >/dev/null 2>&1; then return 1; fi
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Vigie local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null || die "openssl could not make the CA in $d"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null || die "openssl could not make a server key in $d"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -days 3650 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null \
    || die "openssl could not sign the server certificate in $d"
}

# maven_libs POM DIR WHAT — copies the runtime jars of POM into DIR with
# Maven, again only when the pom changed.
maven_libs() {
  local pom=$1 dir=$2 what=$3 sum
  sum=$(sha256sum "$pom" | cut -d' ' -f1)
  [[ "$(cat "$dir/.stamp" 2>/dev/null)" == "$sum" ]] && return 0
  say "mvn dependency:copy-dependencies: $what jars into $dir"
  rm -rf "$dir"
  mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir" >&2 \
    || die "Maven could not fetch the $what jars ($pom)"
  echo "$sum" >"$dir/.stamp"
}

# python_venv DIR REQUIREMENTS... — makes the virtualenv DIR with every
# REQUIREMENTS file installed, again whenever one of them changes (their
# contents are kept in DIR/requirements.stamp).
python_venv() {
  local venv="$1"; shift
  local want
  want=$(cd "$VIGIE_ROOT" && cat "$@")
  if [[ "$(cat "$venv/requirements.stamp" 2>/dev/null)" != "$want" ]]; then
    say "pip install ${*/#/-r } into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    local args=()
    for f in "$@"; do args+=(-r "$VIGIE_ROOT/$f"); done
    "$venv/bin/pip" install -q --disable-pip-version-check "${args[@]}" \
      || die "could not install $* into $venv"
    printf '%s' "$want" > "$venv/requirements.stamp"
  fi
}

# go_tool MODULE VERSION NAME — `go install MODULE@VERSION` into
# $VIGIE_TOOLS/bin, once per version (a stamp file records it).
go_tool() {
  local module="$1" version="$2" name="$3"
  local stamp="$VIGIE_TOOLS/bin/.$name.version"
  if [[ ! -x "$VIGIE_TOOLS/bin/$name" || "$(cat "$stamp" 2>/dev/null)" != "$version" ]]; then
    command -v go >/dev/null || die "Go is needed to install $name"
    say "go install $module@$version"
    mkdir -p "$VIGIE_TOOLS/bin"
    GOBIN="$VIGIE_TOOLS/bin" GOFLAGS=-mod=mod go install "$module@$version" \
      || die "could not install $name"
    echo "$version" >"$stamp"
  fi
}

# as_root CMD... — runs CMD as root (through sudo when not root).
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE... — installs the Debian packages not installed yet.
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
