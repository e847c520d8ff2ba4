#!/usr/bin/env bash
# The steps of the composite action in action.yml. Every input arrives as an environment
# variable (DP_*), never interpolated into the script, so a value is data, not code.
#
#   entrypoint.sh install   pip-install dalle-pipe: DP_INSTALL (a requirement), else this checkout
#   entrypoint.sh run       validate, then plan + run (or run --check) on DP_TARGETS
set -euo pipefail

fail() {  # a bad input: an annotation, and exit 2 as dalle-pipe does for bad input
  echo "::error title=dalle-pipe action::$1"
  exit 2
}

flag() {  # a boolean input: true or false (empty means false)
  case "${2,,}" in
    true) return 0 ;;
    false | "") return 1 ;;
    *) fail "input $1 must be true or false, not '$2'" ;;
  esac
}

install() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [[ -n "${DP_INSTALL:-}" ]]; then
    [[ "$DP_INSTALL" != -* ]] || fail "input install must be a requirement or a path, not an option"
    python -m pip install --disable-pip-version-check -q "$DP_INSTALL"
  else
    python -m pip install --disable-pip-version-check -q "$here"
  fi
  dalle-pipe --version 2>/dev/null || dalle-pipe --help >/dev/null
}

run() {
  local -a targets=() common=() run_args=()
  # Targets are separated by spaces or newlines; patterns like recipes/*.yaml are expanded here.
  local old_ifs="$IFS"
  IFS=$' \t\n'
  # shellcheck disable=SC2206  # splitting (and globbing) the list is the point
  targets=(${DP_TARGETS:-})
  IFS="$old_ifs"
  for t in "${targets[@]}"; do
    [[ "$t" != -* ]] || fail "input targets: '$t' is not a file or folder (options are inputs of their own)"
  done
  if flag offline "${DP_OFFLINE:-}"; then
    common+=(--offline)
  fi
  if [[ -n "${DP_MAX_COST:-}" ]]; then
    [[ "$DP_MAX_COST" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "input max-cost must be a number of US dollars, not '$DP_MAX_COST'"
    run_args+=(--max-cost "$DP_MAX_COST")
  fi
  dalle-pipe validate "${common[@]}" -- "${targets[@]}"
  if flag check "${DP_CHECK:-}"; then
    dalle-pipe run --check "${common[@]}" -- "${targets[@]}"
  else
    dalle-pipe plan "${common[@]}" -- "${targets[@]}"
    dalle-pipe run "${common[@]}" "${run_args[@]}" -- "${targets[@]}"
  fi
}

case "${1:-}" in
  install) install ;;
  run) run ;;
  *) echo "usage: $0 install|run" >&2; exit 2 ;;
esac
