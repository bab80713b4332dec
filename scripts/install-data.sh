#!/usr/bin/env bash
# The real data the tests and benchmarks read ships in Debian packages; install what is missing.
# Needs root (or sudo); otherwise prints the command to run.
set -euo pipefail
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)            # MiniLM retrieval task
[ -f /usr/share/games/fortunes/computers ] || missing+=(fortunes)         # builtin:gpt-tiny corpus
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "missing Debian packages: ${missing[*]}; run: apt-get install ${missing[*]}" >&2
  exit 1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
