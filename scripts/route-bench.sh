#!/usr/bin/env bash
# The routing figures of docs/performance.md ("Routing"), on loopback, keys
# made on the fly: three nodes whose `work` executor sleeps 5, 20 and 50 ms
# before echoing, and a delegator, Sprout, that knows all three.
#
#  1. the share of a routed `sage bench` each node gets;
#  2. p50/p99 of routed delegations against `--target` the 5 ms node (the
#     best pick by hand), alternating rounds;
#  3. the cost of routing itself: delegations/s of `--target` against a
#     routed run with one candidate, builtin echo, alternating rounds;
#  4. the 5 ms node killed (SIGKILL) and restarted under routed load:
#     requests lost, tasks run on two nodes, latency against the same load
#     without the kill.
#
#   scripts/route-bench.sh [SECONDS_PER_RUN] [ROUNDS]   (default 5 and 3)
#
# SAGE=path/to/sage uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}

sage=${SAGE:-$(scripts/build-sage)}
. scripts/scratch.sh

names=(Fast Medium Slow)
sleeps=(0.005 0.020 0.050)
"$sage" --keys-dir "$work/sprout" keygen --name Sprout >/dev/null 2>&1
public() { "$sage" --keys-dir "$work/$1" key show --name "$2" --public-only; }
sprout_key=$(public sprout Sprout)

# serve NAME PORT: starts NAME's node (PORT 0: any) and waits until it
# listens; sets pid_NAME and addr_NAME.
serve() {
    local name=$1 port=$2 log="$work/$1.log"
    : >"$log"
    SAGE_LOG=warn,sage=info "$sage" --keys-dir "$work/$name" --state-dir "$work/$name-state" \
        serve --config "$work/$name.toml" --name "$name" --host 127.0.0.1 --port "$port" 2>"$log" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 200); do
        grep -q 'listening on' "$log" && break
        sleep 0.05
    done
    printf -v "pid_$name" %s "$pid"
    printf -v "addr_$name" %s "$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$log" | tail -1)"
}

for i in 0 1 2; do
    name=${names[$i]}
    "$sage" --keys-dir "$work/$name" keygen --name "$name" >/dev/null 2>&1
    cat >"$work/$name.toml" <<EOF
[executors.echo]
kind = "builtin"
builtin = "echo"

[executors.work]
kind = "command"
command = ["sh", "-c", "sleep ${sleeps[$i]}; cat"]
max_concurrency = 16
timeout = "30s"
EOF
    "$sage" --keys-dir "$work/$name" peer add --name Sprout --public-key "$sprout_key" >/dev/null
    serve "$name" 0
    addr_var=addr_$name
    "$sage" --keys-dir "$work/sprout" peer add --name "$name" --public-key "$(public "$name" "$name")" \
        --address "${!addr_var}" >/dev/null
done

bench() { "$sage" --keys-dir "$work/sprout" --state-dir "$work/sprout-state" bench --local Sprout --json "$@"; }
report() { python3 "$work/report.py" "$@"; }
cat >"$work/report.py" <<'PY'
import collections, json, sqlite3, statistics as st, sys

work = sys.argv[2]


def load(name):
    return json.load(open(f"{work}/{name}.json"))["sage"]


def rounds(kind, n):
    return [load(f"{kind}-{r}") for r in range(1, n + 1)]


def tasks():
    """Each task id the three nodes recorded, with on how many nodes."""
    runs = collections.Counter()
    for name in ("Fast", "Medium", "Slow"):
        db = sqlite3.connect(f"file:{work}/{name}-state/sage.db?mode=ro", uri=True)
        for (task_id,) in db.execute("SELECT task_id FROM tasks"):
            runs[task_id] += 1
    return runs


def shares():
    r = load("shares")
    total = sum(p["requests"] for p in r["peers"])
    print("| peer | executor | requests | share | ok |")
    print("| --- | --- | --- | --- | --- |")
    for p, ms in zip(r["peers"], (5, 20, 50)):
        print(f"| {p['peer']} | {ms} ms | {p['requests']} | {p['requests'] / max(total, 1):.3f} | {p['ok']} |")
    print(f"errors: {r['errors']}")


def latency(n):
    t, r = rounds("lat-target", n), rounds("lat-routed", n)
    print("| measure | --target Fast (median of rounds) | routed | routed / target |")
    print("| --- | --- | --- | --- |")
    for name, get in (("p50 ms", lambda s: s["latency_ms"]["p50"]),
                      ("p99 ms", lambda s: s["latency_ms"]["p99"]),
                      ("per second", lambda s: s["per_second"])):
        a, b = st.median(map(get, t)), st.median(map(get, r))
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.3f} |")
    print("p50 by round (target, routed):",
          [(round(x["latency_ms"]["p50"], 1), round(y["latency_ms"]["p50"], 1)) for x, y in zip(t, r)])
    print("routed shares by round (Fast, Medium, Slow):",
          [tuple(p["requests"] for p in y["peers"]) for y in r])


def cost(n):
    t, r = rounds("cost-target", n), rounds("cost-routed", n)
    cpu = lambda s: s["cpu_ms"] * 1e3 / max(s["ok"], 1)
    print("| round | --target /s | routed /s | routed / target | client CPU µs/req, target / routed |")
    print("| --- | --- | --- | --- | --- |")
    for i, (x, y) in enumerate(zip(t, r), 1):
        print(f"| {i} | {x['per_second']:.0f} | {y['per_second']:.0f} | "
              f"{y['per_second'] / x['per_second']:.3f} | {cpu(x):.0f} / {cpu(y):.0f} |")
    ratios = [y["per_second"] / x["per_second"] for x, y in zip(t, r)]
    print(f"median ratio routed / target: {st.median(ratios):.3f}")


def before():
    print(sum(tasks().values()))


def failover(requests, rows_before):
    steady, fail = load("steady"), load("failover")
    errors = sum(fail["errors"].values())
    runs = tasks()
    twice = sum(1 for n in runs.values() if n > 1)
    print(f"requests {requests}: verified {fail['ok']}, clean failures {errors} {fail['errors']}, "
          f"lost {requests - fail['ok'] - errors}")
    print(f"tasks run on two nodes: {twice}; task rows added: {sum(runs.values()) - rows_before}")
    print("shares (peer, attempts, verified):", [(p["peer"], p["requests"], p["ok"]) for p in fail["peers"]])
    print("| measure | steady | with the kill | ratio |")
    print("| --- | --- | --- | --- |")
    for k in ("p50", "p99", "max", "mean"):
        a, b = steady["latency_ms"][k], fail["latency_ms"][k]
        print(f"| {k} ms | {a:.2f} | {b:.2f} | {b / a:.3f} |")
    a, b = steady["elapsed_ms"], fail["elapsed_ms"]
    print(f"| elapsed ms | {a:.0f} | {b:.0f} | {b / a:.3f} |")


section = sys.argv[1]
if section == "shares":
    shares()
elif section == "latency":
    latency(int(sys.argv[3]))
elif section == "cost":
    cost(int(sys.argv[3]))
elif section == "before":
    before()
elif section == "requests":
    print(load("lat-routed-1")["ok"])
else:
    failover(int(sys.argv[3]), int(sys.argv[4]))
PY

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "runs of ${secs} s, ${rounds} rounds each where alternated; work = sh -c 'sleep S; cat' (S = 5, 20, 50 ms), echo = builtin"
echo

echo "## 1. shares of a routed run (work, concurrency 4)"
bench --task-type work --concurrency 4 --duration "$secs" >"$work/shares.json"
report shares "$work"
echo

echo "## 2. routed against --target the 5 ms node (work, concurrency 4)"
for r in $(seq "$rounds"); do
    bench --task-type work --concurrency 4 --duration "$secs" --target Fast >"$work/lat-target-$r.json"
    bench --task-type work --concurrency 4 --duration "$secs" >"$work/lat-routed-$r.json"
done
report latency "$work" "$rounds"
echo

echo "## 3. the cost of routing (echo, concurrency 32, one candidate)"
for r in $(seq "$rounds"); do
    bench --task-type echo --concurrency 32 --duration "$secs" --target Fast >"$work/cost-target-$r.json"
    bench --task-type echo --concurrency 32 --duration "$secs" --exclude Medium --exclude Slow >"$work/cost-routed-$r.json"
done
report cost "$work" "$rounds"
echo

echo "## 4. the 5 ms node killed and restarted under routed load (work, concurrency 4)"
# As many requests as a routed run of SECONDS made, so that the kill (at a
# third) and the restart (at two thirds) fall inside the run.
requests=$(report requests "$work")
bench --task-type work --concurrency 4 --requests "$requests" >"$work/steady.json"
rows_before=$(report before "$work")
bench --task-type work --concurrency 4 --requests "$requests" >"$work/failover.json" &
loader=$!
third=$(python3 -c "print($secs / 3)")
sleep "$third"
fast_port=${addr_Fast##*:}
kill -9 "$pid_Fast"
wait "$pid_Fast" 2>/dev/null || true
sleep "$third"
serve Fast "$fast_port"
wait "$loader" || true
report failover "$work" "$requests" "$rows_before"
echo

echo "## 5. how soon a restarted node gets tasks again (work, concurrency 4, $((7 * secs)) s)"
# Fast is killed at 0.3 x SECONDS and restarted at 0.6 x SECONDS; its
# store's task rows, every SECONDS / 2, say when the router sends it tasks
# again.
fast_rows() { python3 -c "import sqlite3, sys; print(sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True).execute('SELECT count(*) FROM tasks').fetchone()[0])" "$work/Fast-state/sage.db"; }
bench --task-type work --concurrency 4 --duration "$((7 * secs))" >"$work/recovery.json" &
loader=$!
started=$(date +%s.%N)
at() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(date +%s.%N)" "$started"; }
sleep "$(python3 -c "print(0.3 * $secs)")"
kill -9 "$pid_Fast"
wait "$pid_Fast" 2>/dev/null || true
echo "t=$(at) s: Fast killed, $(fast_rows) task rows"
sleep "$(python3 -c "print(0.3 * $secs)")"
serve Fast "$fast_port"
echo "t=$(at) s: Fast restarted, $(fast_rows) task rows"
while kill -0 "$loader" 2>/dev/null; do
    sleep "$(python3 -c "print($secs / 2)")"
    echo "t=$(at) s: $(fast_rows) task rows"
done
wait "$loader" || true
