# Shared helpers of the Vigie scripts (sourced, not run).
# State lives in .vigie/ at the top of the checkout (git-ignored).

set -euo pipefail

VIGIE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIGIE_STATE="${VIGIE_STATE:-$VIGIE_ROOT/.vigie}"
TANSU_VERSION="0.6.0"
CONFLUENT_KAFKA_VERSION="2.16.0"
ONNXRUNTIME_VERSION="1.32.0"
NUMPY_VERSION="2.4.6"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$VIGIE_STATE"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_port HOST:PORT SECONDS — wait for a TCP port to accept connections.
wait_port() {
  local hp=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
