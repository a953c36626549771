#!/usr/bin/env python3
"""Drive a real headless Chromium over the DevTools protocol, one step per line.

The web UI tests (tests/it/web_ui.rs) start this script and talk to it on
stdin/stdout: each line in is a JSON step, each line out is its JSON result.
Chromium is started with --remote-debugging-pipe (the protocol on fds 3 and 4,
NUL-terminated JSON), so no port and no websocket library are needed; only the
Python standard library.

Steps:
  {"goto": URL}                 navigate and wait for the load event
  {"wait": JS, "timeout": S}    evaluate JS until it is truthy (error after S s)
  {"eval": JS}                  evaluate JS, return its value
  {"screenshot": PATH}          save a PNG of the page
  {"quit": true}
Results: {"ok": VALUE} or {"error": TEXT}. JavaScript dialogs (confirm) are
accepted and counted in the "dialogs" field of each result.

Chromium missing is an error (the suite installs Debian's chromium).
"""

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Chromium:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise SystemExit("chromium is not installed: run the suite with tests/run (it installs it)")
        self.profile = tempfile.mkdtemp(prefix="postern-chromium-")
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def fds():
            # Chromium reads fd 3 and writes fd 4; move both above 10 first
            # so that neither dup2 clobbers the other's source.
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1280,900",
                "--user-data-dir=" + self.profile,
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=fds,
            pass_fds=(3, 4),  # kept open after fds() put the pipes there
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.w = os.fdopen(to_chrome_w, "wb", buffering=0)
        self.r = os.fdopen(from_chrome_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.dialogs = 0
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def send(self, method, params=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        self.w.write(json.dumps(msg).encode() + b"\0")
        return self.next_id

    def read(self):
        while b"\0" not in self.buf:
            chunk = self.r.read(65536)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        msg = json.loads(raw)
        if msg.get("method") == "Page.javascriptDialogOpening":
            self.dialogs += 1
            self.send("Page.handleJavaScriptDialog", {"accept": True})
        return msg

    def call(self, method, params=None):
        want = self.send(method, params)
        while True:
            msg = self.read()
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"].get("message")))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg["method"])

    def evaluate(self, js):
        r = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError("JavaScript: %s" % (d.get("exception", {}).get("description") or d.get("text")))
        return r.get("result", {}).get("value")

    def goto(self, url):
        self.events = []
        r = self.call("Page.navigate", {"url": url})
        if r.get("errorText"):
            raise RuntimeError("navigate: " + r["errorText"])
        deadline = time.time() + 30
        while "Page.loadEventFired" not in self.events:
            if time.time() > deadline:
                raise RuntimeError("no load event within 30 s")
            msg = self.read()
            if "method" in msg:
                self.events.append(msg["method"])
        return self.evaluate("document.title")

    def wait(self, js, timeout):
        deadline = time.time() + timeout
        while True:
            try:
                v = self.evaluate(js)
            except RuntimeError:
                v = None  # a page in the middle of navigating
            if v:
                return v
            if time.time() > deadline:
                raise RuntimeError("still false after %s s: %s" % (timeout, js))
            time.sleep(0.1)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return os.path.getsize(path)

    def close(self):
        try:
            self.proc.kill()
            self.proc.wait(10)
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def main():
    browser = Chromium()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            step = json.loads(line)
            try:
                if "goto" in step:
                    out = {"ok": browser.goto(step["goto"])}
                elif "wait" in step:
                    out = {"ok": browser.wait(step["wait"], step.get("timeout", 15))}
                elif "eval" in step:
                    out = {"ok": browser.evaluate(step["eval"])}
                elif "screenshot" in step:
                    out = {"ok": browser.screenshot(step["screenshot"])}
                elif "quit" in step:
                    print(json.dumps({"ok": True}), flush=True)
                    return
                else:
                    out = {"error": "unknown step %r" % step}
            except RuntimeError as e:
                out = {"error": str(e)}
            out["dialogs"] = browser.dialogs
            print(json.dumps(out), flush=True)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
