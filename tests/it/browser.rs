//! A real headless Chromium for the web UI tests, driven over the DevTools
//! protocol by `tests/browser/cdp.py` (one JSON step per line). Chromium
//! missing fails the test: the suite's script installs Debian's `chromium`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

use crate::harness::repo_root;

pub struct Browser {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// JavaScript dialogs (alert, confirm) the page opened, all accepted.
    pub dialogs: u64,
}

impl Browser {
    pub fn start() -> Browser {
        assert!(
            Command::new("chromium")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "chromium is not installed: run the suite with tests/run (it installs it)"
        );
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/browser/cdp.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            input,
            output,
            dialogs: 0,
        }
    }

    fn step(&mut self, step: Value) -> Value {
        writeln!(self.input, "{step}").expect("the browser driver stopped");
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("browser driver said {line:?} ({e}) to {step}"));
        if let Some(d) = v["dialogs"].as_u64() {
            self.dialogs = d;
        }
        if let Some(e) = v.get("error") {
            panic!("browser: {step}: {e}");
        }
        v["ok"].clone()
    }

    /// Loads `url` and waits for its load event; the page title.
    pub fn goto(&mut self, url: &str) -> String {
        self.step(json!({ "goto": url }))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of `js` in the page.
    pub fn eval(&mut self, js: &str) -> Value {
        self.step(json!({ "eval": js }))
    }

    /// Waits until `js` is truthy (panics after `secs`).
    pub fn wait(&mut self, js: &str, secs: u64) -> Value {
        self.step(json!({ "wait": js, "timeout": secs }))
    }

    /// A PNG of the page at `path`; its size.
    pub fn screenshot(&mut self, path: &std::path::Path) -> u64 {
        self.step(json!({ "screenshot": path })).as_u64().unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "{}", json!({ "quit": true }));
        let _ = self.child.wait();
    }
}
