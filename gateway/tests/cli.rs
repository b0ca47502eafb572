//! The `switchboard-gateway` binary's command line: `check-config` validates
//! without starting, and every error names the bad key.

use std::process::Command;

fn gateway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-gateway"));
    // Start from a clean environment so the machine's variables do not leak in.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

#[test]
fn check_config_accepts_env_only_configuration() {
    let out = gateway()
        .arg("check-config")
        .env(
            "SWITCHBOARD_JWT_SECRET",
            "a-secret-of-enough-length-for-hs256",
        )
        .env("SWITCHBOARD_PORT", "3999")
        .output()
        .expect("run gateway");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0.0.0.0:3999"), "{stdout}");
    assert!(stdout.contains("embedded"), "{stdout}");
}

#[test]
fn check_config_names_the_bad_key_and_exits_2() {
    for (var, value, key) in [
        ("SWITCHBOARD_REDIS_URL", "localhost:6379", "redis.url"),
        ("SWITCHBOARD_PORT", "not-a-port", "server.port"),
        (
            "SWITCHBOARD_ENGINE__PING_INTERVAL_MS",
            "0",
            "engine.ping_interval_ms",
        ),
    ] {
        let out = gateway()
            .arg("check-config")
            .env(
                "SWITCHBOARD_JWT_SECRET",
                "a-secret-of-enough-length-for-hs256",
            )
            .env(var, value)
            .output()
            .expect("run gateway");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
    }
}

#[test]
fn check_config_reads_the_toml_file_and_reports_a_missing_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "[auth]\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent/key.pem\"\n",
    )
    .expect("write config");
    let out = gateway()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.public_key_file"), "{stderr}");
}
