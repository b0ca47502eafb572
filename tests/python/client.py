#!/usr/bin/env python3
"""Official python-socketio client for Switchboard interop tests.

Connects to URL (with an optional JWT as auth={"token": ...}), prints
{"connected": true, "sid": "...", "transport": "..."} once connected, then
waits for one event named EVENT and prints {"event": EVENT, "args": [...]}
as one JSON line and exits 0. Binary values in args are {"$bin": base64}.
Exit codes: 2 connect error, 3 timeout, 4 disconnected before the event,
1 anything else. Errors go to stderr (and as {"error": ...} to stdout).

Usage:
  client.py --url http://127.0.0.1:3002 --event ev [--token JWT]
            [--auth-json '{"token": "..."}'] [--transports websocket,polling]
            [--namespace /] [--path socket.io] [--header 'K: V']...
            [--emit NAME JSON_ARGS_ARRAY] [--timeout 10]
"""

import argparse
import base64
import json
import sys
import threading

import socketio


def encode(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$bin": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    if isinstance(v, dict):
        return {str(k): encode(x) for k, x in v.items()}
    return v


def decode(v):
    if isinstance(v, list):
        return [decode(x) for x in v]
    if isinstance(v, dict):
        if list(v.keys()) == ["$bin"] and isinstance(v["$bin"], str):
            return base64.b64decode(v["$bin"])
        return {k: decode(x) for k, x in v.items()}
    return v


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(code, message):
    out({"error": message})
    sys.stderr.write(f"client.py: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--event", required=True)
    p.add_argument("--token")
    p.add_argument("--auth-json")
    p.add_argument("--transports", default="polling,websocket")
    p.add_argument("--namespace", default="/")
    p.add_argument("--path", default="socket.io")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--emit", nargs=2, metavar=("NAME", "JSON_ARGS"))
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()

    auth = None
    if a.auth_json:
        auth = json.loads(a.auth_json)
    elif a.token:
        auth = {"token": a.token}
    headers = {}
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    transports = [t for t in a.transports.split(",") if t]
    ns = a.namespace

    sio = socketio.Client(reconnection=False)
    got = threading.Event()
    gone = threading.Event()
    result = {}

    def on_any(event, *args):
        if event == a.event and not got.is_set():
            result["args"] = list(args)
            got.set()

    sio.on("*", on_any, namespace=ns)
    sio.on("disconnect", lambda *reason: gone.set(), namespace=ns)

    try:
        sio.connect(
            a.url,
            auth=auth,
            headers=headers,
            transports=transports,
            namespaces=[ns],
            socketio_path=a.path,
            wait_timeout=a.timeout,
        )
    except socketio.exceptions.ConnectionError as e:
        fail(2, f"connect error: {e}")
    except Exception as e:  # noqa: BLE001 - report anything as a connect failure
        fail(2, f"connect error: {type(e).__name__}: {e}")

    out({"connected": True, "sid": sio.get_sid(namespace=ns), "transport": sio.transport()})

    if a.emit:
        sio.emit(a.emit[0], tuple(decode(json.loads(a.emit[1]))), namespace=ns)

    waited = 0.0
    step = 0.05
    while waited < a.timeout and not got.is_set():
        if gone.is_set():
            break
        got.wait(step)
        waited += step
    if not got.is_set():
        try:
            sio.disconnect()
        except Exception:  # noqa: BLE001
            pass
        if gone.is_set():
            fail(4, f"disconnected before event {a.event!r}")
        fail(3, f"timeout after {a.timeout}s waiting for event {a.event!r}")

    out({"event": a.event, "args": encode(result["args"])})
    try:
        sio.disconnect()
    except Exception:  # noqa: BLE001
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
