# Sourced by the scripts that start nodes: `work`, a scratch directory, and
# `pids`, the processes they start; on exit both are cleaned up, the
# processes stopped first.
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
