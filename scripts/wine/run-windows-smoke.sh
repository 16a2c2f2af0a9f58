#!/bin/sh
# run-windows-smoke.sh: build the Windows binary and run it under wine, on loopback only.
#
# A developer tool, NOT part of .ci/run: CI never needs wine. What passes here passed under
# wine 8 on Linux, which is not real Windows (see README.md, "Windows under wine").
#
# Needs: wine (Debian 12: apt-get install wine wine64), the MinGW C compiler
# (gcc-mingw-w64-x86-64-win32) and `rustup target add x86_64-pc-windows-gnu`.
#
# Usage: scripts/wine/run-windows-smoke.sh [--release] [--keep]
#   --release  build and run the release binary (default: debug)
#   --keep     keep the work folder (configs, logs, results) and print where it is
#   SMOKE_EXE=path/to/agentcom-sidecar.exe  run the steps on that binary instead of building one
#
# What it does, each step printed PASS or FAIL (exit 1 when any failed):
#   1. builds bcryptprimitives.dll from bcryptprimitives.c (wine 8 has no ProcessPrng, which
#      Rust's std calls for randomness; the shim fills it from advapi32's RtlGenRandom) and puts
#      it beside the .exe, where the loader finds it first;
#   2. builds agentcom-sidecar.exe (x86_64-pc-windows-gnu) and smoke-hub/ (the crate's embedded
#      hub as a Linux program on a fixed loopback port, with the agent's token in a file);
#   3. in a private WINEPREFIX (target/wine-smoke/prefix, made on the first run): --help; init;
#      check (program lookup as cmd.exe does it, then identify against the hub); demo; try with
#      a cmd wake command; run + submit --wait with a description full of cmd metacharacters
#      (it must reach the agent byte for byte); try --tier trivial (a shell command the sidecar
#      runs); a backgrounded agent (start /b) that outlives its wake shell; a hub cancel that must
#      stop that agent; Ctrl+C (SIGINT to wine: close 1000, exit 0); service install / a task
#      through the service / service uninstall through wine's service manager; join / leave.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/scripts/wine"
PROFILE=debug
KEEP=0
for arg in "$@"; do
    case "$arg" in
    --release) PROFILE=release ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--release] [--keep]" >&2; exit 64 ;;
    esac
done

for tool in wine x86_64-w64-mingw32-gcc cargo curl; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (see this script's header)" >&2; exit 69; }
done

SMOKE="$ROOT/target/wine-smoke"
mkdir -p "$SMOKE"
export WINEPREFIX="${WINEPREFIX:-$SMOKE/prefix}" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
FAILED=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; FAILED=$((FAILED + 1)); }
step() { echo; echo "----  $*"; }

step "build the ProcessPrng shim, the Windows binary and the smoke hub"
x86_64-w64-mingw32-gcc -O2 -shared -o "$SMOKE/bcryptprimitives.dll" \
    "$HERE/bcryptprimitives.c" "$HERE/bcryptprimitives.def" -ladvapi32 || exit 1
flag=""
[ "$PROFILE" = release ] && flag="--release"
BUILT="$ROOT/target/x86_64-pc-windows-gnu/$PROFILE/agentcom-sidecar.exe"
if [ -z "${SMOKE_EXE:-}" ]; then
    (cd "$ROOT" && cargo build --target x86_64-pc-windows-gnu $flag) || exit 1
fi
(cd "$HERE/smoke-hub" && CARGO_TARGET_DIR="$ROOT/target/wine-smoke-hub" cargo build) || exit 1
HUB_BIN="$ROOT/target/wine-smoke-hub/debug/wine-smoke-hub"
[ -d "$WINEPREFIX/drive_c" ] || wineboot --init >/dev/null 2>&1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentcom-wine-smoke.XXXXXX")
cp "${SMOKE_EXE:-$BUILT}" "$WORK/agentcom-sidecar.exe" && cp "$SMOKE/bcryptprimitives.dll" "$WORK/" || exit 1
EXE="$WORK/agentcom-sidecar.exe"
win() { winepath -w "$1" 2>/dev/null; }
CFG="$WORK/cfg/config.json"
WCFG=$(win "$CFG")
PORT=$((20000 + $$ % 20000))
HUB_PID=""
SIDECAR_PID=""
cleanup() {
    [ -n "$SIDECAR_PID" ] && kill -INT "$SIDECAR_PID" 2>/dev/null
    [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null
    wine "$EXE" service uninstall --config "$WCFG" >/dev/null 2>&1
    wineserver -k 2>/dev/null
    if [ "$KEEP" = 1 ]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $1 seconds for the command in the rest of the arguments to succeed.
wait_for() {
    limit=$1; shift
    i=0
    while [ "$i" -lt $((limit * 10)) ]; do
        "$@" && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

step "--help"
if wine "$EXE" --help >"$WORK/help.out" 2>&1 && grep -q "Usage: agentcom-sidecar.exe" "$WORK/help.out"; then
    pass "--help exits 0 and prints the usage"
else
    fail "--help (see $WORK/help.out)"
fi

step "the smoke hub on 127.0.0.1:$PORT"
mkdir -p "$WORK/cfg"
"$HUB_BIN" "$PORT" win-agent "$WORK/cfg/token" >"$WORK/hub.out" 2>&1 &
HUB_PID=$!
wait_for 10 grep -q ready "$WORK/hub.out" || { fail "the smoke hub did not start (see $WORK/hub.out)"; exit 1; }
pass "hub up: $(head -1 "$WORK/hub.out")"

step "init and check"
wine "$EXE" init --config "$WCFG" --agent-id win-agent --hub-url "ws://127.0.0.1:$PORT/ws" \
    --token-file token --capabilities code --wake-command 'whoami' >"$WORK/init.out" 2>&1
[ $? -eq 0 ] && [ -f "$CFG" ] && pass "init wrote the config" || fail "init (see $WORK/init.out)"
wine "$EXE" check --config "$WCFG" >"$WORK/check.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "wake_command's program \`whoami\` is" "$WORK/check.out"; then
    pass "check exits 0: whoami found as cmd.exe finds it (PATHEXT), the hub identified the agent"
else
    fail "check exited $rc (see $WORK/check.out)"
fi

step "demo (the embedded hub in-process)"
if timeout 120 wine "$EXE" demo >"$WORK/demo.out" 2>&1; then
    pass "demo exits 0 ($(grep -c . "$WORK/demo.out") lines; its git step is skipped: no git for Windows in the prefix)"
else
    fail "demo (see $WORK/demo.out)"
fi

# The agent: a cmd wake command writing .started, the description, and the result.
# No %NAME% in it: wine 8's cmd expands %NAME% inside an expanded value (real cmd does not).
DESC='Say hello & 100% "quoted" !bang! ^caret <lt> |pipe'
set_config() {
    python3 - "$CFG" "$@" <<'EOF'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
for pair in sys.argv[2:]:
    key, value = pair.split("=", 1)
    config[key] = json.loads(value)
json.dump(config, open(path, "w"), indent=2)
EOF
}
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
FOREGROUND='echo started> "%AGENTCOM_STARTED_FILE%" & echo ${TASK_DESCRIPTION}> "%AGENTCOM_RESULTS_DIR%\desc-${TASK_ID}.txt" & echo {"status":"success","output":"task ${TASK_ID}"}> "%AGENTCOM_RESULT_FILE%"'
set_config "wake_command=$(json_str "$FOREGROUND")"
desc_arrived() {
    # cmd's echo ends the line with CRLF (wine's also with a space): compare the rest.
    f=$(ls "$WORK"/cfg/results/desc-"$1".txt 2>/dev/null) || return 1
    [ "$(tr -d '\r' <"$f" | sed 's/ *$//')" = "$DESC" ]
}

step "try with a cmd wake command"
if timeout 60 wine "$EXE" try --config "$WCFG" "$DESC" >"$WORK/try.out" 2>&1; then
    pass "try exits 0: the agent took the task, confirmed it and reported a result"
else
    fail "try (see $WORK/try.out)"
fi

step "try --tier trivial: a shell command the sidecar runs itself (cmd /D /S /C, in a job)"
set_config 'allow_hub_commands=true'
if timeout 60 wine "$EXE" try --config "$WCFG" --tier trivial --shell-command 'echo hello from cmd & ver' \
    "run a shell command" >"$WORK/try-shell.out" 2>&1 && grep -q 'hello from cmd' "$WORK/try-shell.out"; then
    pass "try --tier trivial exits 0 with the command's output in the result"
else
    fail "try --tier trivial (see $WORK/try-shell.out)"
fi
set_config 'allow_hub_commands=false'

step "run against the hub, submit --wait"
start_sidecar() {
    wine "$EXE" run --config "$WCFG" >>"$WORK/run.out" 2>&1 &
    SIDECAR_PID=$!
    wait_for 20 grep -q "identified as win-agent" "$WORK/run.out"
}
start_sidecar || fail "run did not identify (see $WORK/run.out)"
timeout 60 wine "$EXE" submit --config "$WCFG" --assign-to win-agent --wait "$DESC" >"$WORK/submit1.out" 2>"$WORK/submit1.err"
id=$(head -1 "$WORK/submit1.out")
if grep -q completed "$WORK/submit1.err" && desc_arrived "$id"; then
    pass "task $id completed; the description reached cmd byte for byte"
else
    fail "task $id (see $WORK/submit1.err, $WORK/run.out)"
fi

step "a backgrounded agent (start /b) that works 8 s, agent_exit_grace_ms 2000"
printf '@echo off\r\nping -n %%1 127.0.0.1 >nul\r\necho {"status":"success","output":"slept %%1"}> "%%AGENTCOM_RESULT_FILE%%.tmp"\r\nmove /y "%%AGENTCOM_RESULT_FILE%%.tmp" "%%AGENTCOM_RESULT_FILE%%" >nul\r\n' \
    >"$WORK/agent.cmd"
AGENT=$(win "$WORK/agent.cmd")
kill -INT "$SIDECAR_PID"; wait "$SIDECAR_PID" 2>/dev/null
set_config 'agent_exit_grace_ms=2000' \
    "wake_command=$(json_str "echo started> \"%AGENTCOM_STARTED_FILE%\" & start \"\" /b cmd /c $AGENT 9")"
start_sidecar || fail "run did not identify again (see $WORK/run.out)"
timeout 60 wine "$EXE" submit --config "$WCFG" --assign-to win-agent --wait "background" >"$WORK/submit2.out" 2>&1
if grep -q "slept 9" "$WORK/submit2.out"; then
    pass "the task completed with the agent's result after the wake shell had exited"
else
    fail "backgrounded agent (see $WORK/submit2.out, $WORK/run.out)"
fi

step "a hub cancel stops the backgrounded agent"
kill -INT "$SIDECAR_PID"; wait "$SIDECAR_PID" 2>/dev/null
set_config "wake_command=$(json_str "start \"\" /b cmd /c $AGENT 47")"
start_sidecar || fail "run did not identify again (see $WORK/run.out)"
id=$(timeout 60 wine "$EXE" submit --config "$WCFG" --assign-to win-agent "cancel me" 2>/dev/null)
# Anchored: an unanchored pattern would match the `sh -c` below that names it.
pinging() { pgrep -f '^ping -n 47 127' >/dev/null; }
if wait_for 20 pinging; then
    curl -s -X POST -H "Authorization: Bearer $(cat "$WORK/cfg/token")" \
        "http://127.0.0.1:$PORT/api/tasks/$id/cancel" >"$WORK/cancel.out"
    if wait_for 10 sh -c "! pgrep -f '^ping -n 47 127' >/dev/null"; then
        pass "cancel of $id: the agent's ping is gone"
    else
        fail "cancel of $id left the agent running"
    fi
else
    fail "the backgrounded agent never started (see $WORK/run.out)"
fi

step "Ctrl+C (SIGINT to wine)"
kill -INT "$SIDECAR_PID"
if wait_for 5 sh -c "! kill -0 $SIDECAR_PID 2>/dev/null"; then
    wait "$SIDECAR_PID"
    rc=$?
    if [ $rc -eq 0 ] && grep -q "shutting down (Ctrl+C)" "$WORK/run.out" \
        && grep closed: "$WORK/hub.out" | tail -1 | grep -q "code: Some(1000)"; then
        pass "run logged the shutdown, closed the WebSocket with 1000 and exited 0"
    else
        fail "run exited $rc after Ctrl+C (see $WORK/run.out, $WORK/hub.out)"
    fi
else
    fail "run did not stop on Ctrl+C (see $WORK/run.out)"
fi
SIDECAR_PID=""

step "service install / a task / service uninstall (wine's service manager)"
set_config "wake_command=$(json_str "$FOREGROUND")"
if wine "$EXE" service install --config "$WCFG" >"$WORK/service.out" 2>&1 \
    && timeout 60 wine "$EXE" submit --config "$WCFG" --assign-to win-agent --wait "via the service" \
        >>"$WORK/service.out" 2>&1 \
    && wine "$EXE" service uninstall --config "$WCFG" >>"$WORK/service.out" 2>&1 \
    && wait_for 10 grep -q '"signal":"service stop"' "$WORK/cfg/sidecar.log"; then
    pass "the service ran a task and stopped on uninstall"
else
    fail "service (see $WORK/service.out, $WORK/cfg/sidecar.log)"
fi

step "join / leave --purge (onboarding, a test task through a sidecar join starts)"
JCFG=$(win "$WORK/join/config.json")
if timeout 120 wine "$EXE" join "http://127.0.0.1:$PORT" --config "$JCFG" --capabilities code \
    --wake-command 'echo started> "%AGENTCOM_STARTED_FILE%" & echo {"status":"success"}> "%AGENTCOM_RESULT_FILE%"' \
    >"$WORK/join.out" 2>&1 && grep -q "your agent work together" "$WORK/join.out" \
    && timeout 60 wine "$EXE" leave --purge --config "$JCFG" >"$WORK/leave.out" 2>&1 \
    && [ ! -e "$WORK/join/config.json" ] && [ ! -e "$WORK/join/token" ]; then
    pass "join registered, checked and ran its test task; leave --purge revoked and removed it"
else
    fail "join / leave (see $WORK/join.out, $WORK/leave.out)"
fi

echo
if [ "$FAILED" -eq 0 ]; then
    echo "all steps passed ($(wine --version) on Linux, not real Windows)"
else
    echo "$FAILED step(s) failed"
    [ "$KEEP" = 1 ] || echo "(run again with --keep to keep the files named above)"
fi
[ "$FAILED" -eq 0 ]
