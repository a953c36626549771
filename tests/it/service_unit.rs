//! `dist/postern.service`: the directives the README promises are there,
//! and `systemd-analyze verify` accepts it (on a copy whose ExecStart names
//! the binary just built, since verify checks that it exists); its
//! exposure score, offline, stays "OK".

use std::process::Command;

use crate::harness::{repo_root, BIN};

#[test]
fn the_service_unit_verifies_and_is_confined() {
    let unit = std::fs::read_to_string(repo_root().join("dist/postern.service")).unwrap();
    for d in [
        "ExecStart=/usr/local/bin/postern run --config /etc/postern/postern.toml",
        "User=postern",
        "StateDirectory=postern",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == d), "missing {d}");
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("postern.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/postern", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is not installed: tests/run installs systemd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_it: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("postern.service"))
        .collect();
    assert!(out.status.success() && about_it.is_empty(), "{said}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let overall = said
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{said}{}", String::from_utf8_lossy(&out.stderr)));
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    println!("{overall}");
    assert!(score <= 2.0, "{overall}");
}
