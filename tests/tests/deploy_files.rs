//! Static checks of every file under `deploy/`, with the real tool where one
//! is installed here: `nginx -t`, `systemd-analyze verify`, `node` (PM2
//! file), `switchboard-gateway check-config` (every shipped environment),
//! and YAML parsing of the Kubernetes and Compose files. A check whose tool
//! is missing prints `SKIPPED CHECK ...` (and fails with
//! `SWITCHBOARD_REQUIRE_DEPLOY_TOOLS=1`).

mod deploy_support;

use std::{collections::BTreeMap, fs, process::Command, time::Duration};

use deploy_support::*;
use serde_yaml::Value as Yaml;
use switchboard_testkit::{GatewayOptions, GatewayProcess, bin_path};

/// Default `server.shutdown_deadline_ms` of the gateway.
const DEFAULT_DEADLINE_MS: u64 = 10_000;
/// Default pingInterval + pingTimeout of the gateway, in seconds.
const DEFAULT_PING_WINDOW_S: u64 = 45;
const SECRET: &str = "deploy-test-secret-0123456789abcdef";

/// Directives of the shipped site, comments stripped.
fn directives(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of the `location <path> {` block.
fn location_block<'a>(text: &'a str, path: &str) -> &'a str {
    let start = text
        .find(&format!("location {path} {{"))
        .unwrap_or_else(|| panic!("no `location {path}` block"));
    let rest = &text[start..];
    let end = rest.find("\n    }").expect("location block end");
    &rest[..end]
}

fn seconds(value: &str) -> u64 {
    let v = value.trim().trim_end_matches(';');
    if let Some(m) = v.strip_suffix('m') {
        m.parse::<u64>().expect("minutes") * 60
    } else {
        v.trim_end_matches('s').parse().expect("seconds")
    }
}

fn directive_value<'a>(block: &'a str, name: &str) -> &'a str {
    block
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no `{name}` directive in:\n{block}"))
        .trim_end_matches(';')
}

#[test]
fn nginx_site_content() {
    for file in ["nginx/switchboard.conf", "nginx/switchboard-sticky.conf"] {
        let text = directives(&deploy_file(file));
        // WebSocket upgrade through a map on $http_upgrade.
        assert!(
            text.contains("map $http_upgrade $switchboard_connection"),
            "{file}"
        );
        let sio = location_block(&text, "/socket.io/");
        assert!(
            sio.contains("proxy_pass http://switchboard_gateways;"),
            "{file}"
        );
        assert!(sio.contains("proxy_http_version 1.1;"), "{file}");
        assert!(
            sio.contains("proxy_set_header Upgrade $http_upgrade;"),
            "{file}"
        );
        assert!(
            sio.contains("proxy_set_header Connection $switchboard_connection;"),
            "{file}"
        );
        assert!(sio.contains("proxy_buffering off;"), "{file}");
        // Overwritten, not appended: the client nginx saw is the right-most entry.
        assert!(
            sio.contains("proxy_set_header X-Forwarded-For $remote_addr;"),
            "{file}"
        );
        assert!(
            sio.contains("proxy_set_header X-Real-IP $remote_addr;"),
            "{file}"
        );
        assert!(
            sio.contains("proxy_set_header X-Forwarded-Proto $scheme;"),
            "{file}"
        );
        assert!(
            sio.contains("proxy_set_header X-Switchboard-Forwarded \"\";"),
            "{file}: clients must not be able to set the internal forwarding marker"
        );
        for t in ["proxy_read_timeout", "proxy_send_timeout"] {
            let s = seconds(directive_value(sio, t));
            assert!(
                s > DEFAULT_PING_WINDOW_S,
                "{file}: {t} {s}s must exceed pingInterval+pingTimeout ({DEFAULT_PING_WINDOW_S}s)"
            );
        }
        // Tokens may travel in the query string (auth.token_sources
        // "query"): the access log must leave query strings out.
        let format = text
            .lines()
            .find(|l| l.trim_start().starts_with("log_format switchboard_noargs"))
            .unwrap_or_else(|| panic!("{file}: no log_format switchboard_noargs"));
        for leak in [
            "$request ",
            "$request\"",
            "$request_uri",
            "$args",
            "$query_string",
            "$arg_",
            "$http_referer",
        ] {
            assert!(
                !format.contains(leak),
                "{file}: access log format logs {leak}: {format}"
            );
        }
        assert!(
            text.contains("access_log /var/log/nginx/switchboard.access.log switchboard_noargs;"),
            "{file}: the server must log with switchboard_noargs"
        );
        let api = location_block(&text, "/api/");
        assert!(api.contains("proxy_pass http://switchboard_api;"), "{file}");
        let api_upstream = &text[text.find("upstream switchboard_api").unwrap()..];
        let api_upstream = &api_upstream[..api_upstream.find('}').unwrap()];
        assert!(
            api_upstream.contains(":3001"),
            "{file}: API upstream on 3001"
        );
        // Gateway operator endpoints are not proxied.
        for p in ["/healthz", "/readyz", "/metrics"] {
            assert!(
                !text.contains(&format!("location {p}")),
                "{file} exposes {p}"
            );
            assert!(
                !text.contains(&format!("location = {p}")),
                "{file} exposes {p}"
            );
        }
        let gw_upstream = &text[text.find("upstream switchboard_gateways").unwrap()..];
        let gw_upstream = &gw_upstream[..gw_upstream.find('}').unwrap()];
        let sticky = gw_upstream.contains("ip_hash") || gw_upstream.contains("sticky");
        assert_eq!(
            sticky,
            file.contains("sticky"),
            "{file}: only the -sticky variant may use ip_hash/sticky"
        );
    }
}

#[test]
fn nginx_t_accepts_the_shipped_sites() {
    let Some(nginx) = find_tool("nginx") else {
        skip(
            "nginx -t",
            "nginx is not installed (apt-get install -y nginx-light)",
        );
        return;
    };
    for file in ["nginx/switchboard.conf", "nginx/switchboard-sticky.conf"] {
        let shipped = deploy_file(file);
        // Verbatim (nginx -t does not bind, so port 80 is fine).
        let dir = nginx_dir();
        let conf = write_nginx_conf(dir.path(), &shipped);
        nginx_t(&nginx, dir.path(), &conf)
            .unwrap_or_else(|e| panic!("{file} verbatim: {e}\n--- config ---\n{shipped}"));
        // Adapted as the end-to-end test runs it.
        let port = switchboard_testkit::free_port();
        let gws: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", switchboard_testkit::free_port()))
            .collect();
        let site = adapt_site(
            &shipped,
            &gws,
            &format!("127.0.0.1:{}", switchboard_testkit::free_port()),
            Some(&format!("127.0.0.1:{port}")),
        );
        let dir = nginx_dir();
        let conf = write_nginx_conf(dir.path(), &site);
        let out = nginx_t(&nginx, dir.path(), &conf)
            .unwrap_or_else(|e| panic!("{file} adapted: {e}\n--- site ---\n{site}"));
        assert!(out.contains("test is successful"), "{out}");
        for g in &gws {
            assert!(site.contains(&format!("server {g} max_fails=1")), "{site}");
        }
        assert!(!site.contains("10.0.0.11"), "{site}");
    }
}

#[test]
fn compose_nginx_conf_is_the_shipped_site() {
    let shipped = deploy_file("nginx/switchboard.conf");
    let expected = adapt_site(
        &shipped,
        &["gateway-1:3002".to_string(), "gateway-2:3002".to_string()],
        "api:3001",
        None,
    );
    let compose = deploy_file("compose/nginx-compose.conf");
    let header = compose.strip_suffix(expected.as_str()).unwrap_or_else(|| {
        panic!(
            "deploy/compose/nginx-compose.conf drifted from deploy/nginx/switchboard.conf \
             (only the upstream server lines may differ); regenerate it. Expected body:\n{expected}"
        )
    });
    assert!(
        header.lines().all(|l| l.starts_with('#')),
        "only a comment header may precede the generated body: {header:?}"
    );
}

fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    map
}

#[test]
fn systemd_unit_content_and_env_example() {
    let text = deploy_file("systemd/switchboard-gateway.service");
    let s = unit_settings(&text);
    let one = |k: &str| -> String {
        s.get(k)
            .and_then(|v| v.last().cloned())
            .unwrap_or_else(|| panic!("unit lacks {k}="))
    };
    assert!(one("DynamicUser") == "yes" || s.contains_key("User"));
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("LimitNOFILE"), "65536");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("EnvironmentFile"), "/etc/switchboard/gateway.env");
    assert!(one("ExecStart").starts_with("/usr/local/bin/switchboard-gateway"));

    let env = parse_env_file(&deploy_file("systemd/gateway.env.example"));
    let deadline_ms: u64 = env
        .iter()
        .find(|(k, _)| k == "SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS")
        .map(|(_, v)| v.parse().expect("deadline"))
        .unwrap_or(DEFAULT_DEADLINE_MS);
    let stop = seconds(&one("TimeoutStopSec"));
    assert!(
        stop * 1000 > deadline_ms.max(DEFAULT_DEADLINE_MS),
        "TimeoutStopSec={stop}s must exceed the shutdown deadline ({deadline_ms} ms)"
    );
    assert!(
        env.iter()
            .any(|(k, v)| k == "SWITCHBOARD_SERVER__TRUSTED_PROXIES" && v.contains("127.0.0.1"))
    );
    // The example environment is a valid gateway configuration.
    let out = check_config(&env).unwrap_or_else(|e| panic!("gateway.env.example: {e}"));
    assert!(out.contains("configuration is valid"), "{out}");
}

#[test]
fn systemd_analyze_verify() {
    let Some(analyze) = find_tool("systemd-analyze") else {
        skip(
            "systemd-analyze verify",
            "systemd-analyze is not installed on this machine",
        );
        return;
    };
    // verify checks that ExecStart exists: point it at the built binary.
    let gateway = match bin_path("switchboard-gateway") {
        Ok(p) => p,
        Err(e) => panic!("{e:#}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("switchboard-gateway.service");
    let text = deploy_file("systemd/switchboard-gateway.service").replace(
        "/usr/local/bin/switchboard-gateway",
        gateway.to_str().unwrap(),
    );
    fs::write(&unit, text).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("switchboard-gateway.service"))
        .collect();
    if !out.status.success() && stderr.contains("Failed to") && ours.is_empty() {
        skip(
            "systemd-analyze verify",
            &format!("systemd-analyze cannot run here: {stderr}"),
        );
        return;
    }
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = deploy_file(rel);
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().unwrap();
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.iter()
        .map(|d| {
            let mut v: Yaml =
                serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{rel}: bad YAML: {e}"));
            // Compose uses `<<:` merge keys (YAML 1.1); resolve them like compose does.
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{rel}: bad merge key: {e}"));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn get<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(key),
        }
        .unwrap_or_else(|| panic!("missing `{path}` (at `{key}`) in {cur:?}"));
    }
    cur
}

fn string(v: &Yaml, path: &str) -> String {
    match get(v, path) {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("`{path}` is not a scalar: {other:?}"),
    }
}

#[test]
fn kubernetes_manifests() {
    let dir = repo().join("deploy/kubernetes");
    let mut by_kind: BTreeMap<String, Yaml> = BTreeMap::new();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    files.sort();
    for f in &files {
        for doc in yaml_docs(&format!("kubernetes/{f}")) {
            let kind = string(&doc, "kind");
            assert!(get(&doc, "apiVersion").is_string(), "{f}");
            by_kind.insert(kind, doc);
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Kustomization",
    ] {
        assert!(by_kind.contains_key(kind), "no {kind} in deploy/kubernetes");
    }
    let kustomize = &by_kind["Kustomization"];
    for r in get(kustomize, "resources").as_sequence().unwrap() {
        let r = r.as_str().unwrap();
        assert!(dir.join(r).is_file(), "kustomization lists missing {r}");
    }

    let dep = &by_kind["Deployment"];
    let c = get(dep, "spec.template.spec.containers.0");
    let port = get(c, "ports.0");
    assert_eq!(string(port, "containerPort"), "3002");
    let port_name = string(port, "name");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(string(c, &format!("{probe}.httpGet.path")), path, "{probe}");
        let p = string(c, &format!("{probe}.httpGet.port"));
        assert!(p == port_name || p == "3002", "{probe} port {p}");
    }
    // The advertise address is the pod IP from the downward API.
    let env = get(c, "env").as_sequence().unwrap();
    let pod_ip = env
        .iter()
        .find(|e| string(e, "name") == "POD_IP")
        .expect("POD_IP env");
    assert_eq!(
        string(pod_ip, "valueFrom.fieldRef.fieldPath"),
        "status.podIP"
    );
    let adv = env
        .iter()
        .find(|e| string(e, "name") == "SWITCHBOARD_ADVERTISE_ADDR")
        .expect("SWITCHBOARD_ADVERTISE_ADDR env");
    assert_eq!(string(adv, "value"), "$(POD_IP):3002");
    // Grace period > preStop sleep + shutdown deadline.
    let cm = &by_kind["ConfigMap"];
    let deadline_ms: u64 = get(cm, "data")
        .get("SWITCHBOARD_SERVER__SHUTDOWN_DEADLINE_MS")
        .and_then(Yaml::as_str)
        .map(|v| v.parse().unwrap())
        .unwrap_or(DEFAULT_DEADLINE_MS);
    let pre_stop = get(c, "lifecycle.preStop.exec.command");
    let sleep_s: u64 = pre_stop
        .as_sequence()
        .and_then(|s| s.last())
        .and_then(Yaml::as_str)
        .map(|s| s.parse().unwrap())
        .expect("preStop sleep seconds");
    let grace: u64 = string(dep, "spec.template.spec.terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        grace * 1000 > sleep_s * 1000 + deadline_ms,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep_s}s + deadline {deadline_ms}ms"
    );
    assert_eq!(
        string(c, "securityContext.allowPrivilegeEscalation"),
        "false"
    );
    assert_eq!(
        string(dep, "spec.template.spec.securityContext.runAsNonRoot"),
        "true"
    );
    // Service and PDB select the pods.
    let labels = get(dep, "spec.template.metadata.labels");
    for (kind, path) in [
        ("Service", "spec.selector"),
        ("PodDisruptionBudget", "spec.selector.matchLabels"),
    ] {
        let sel = get(&by_kind[kind], path).as_mapping().unwrap();
        for (k, v) in sel {
            assert_eq!(labels.get(k), Some(v), "{kind} selector {k:?}");
        }
    }
    assert_eq!(
        string(&by_kind["Service"], "spec.ports.0.targetPort"),
        port_name
    );

    // ConfigMap + Secret (+ what the Deployment sets) form a valid config.
    let mut env_vars: Vec<(String, String)> = Vec::new();
    for (kind, key) in [("ConfigMap", "data"), ("Secret", "stringData")] {
        for (k, v) in get(&by_kind[kind], key).as_mapping().unwrap() {
            env_vars.push((
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            ));
        }
    }
    env_vars.push(("SWITCHBOARD_ADVERTISE_ADDR".into(), "10.1.2.3:3002".into()));
    let out = check_config(&env_vars).unwrap_or_else(|e| panic!("ConfigMap+Secret: {e}"));
    assert!(out.contains("bus redis"), "{out}");
}

#[test]
fn compose_file() {
    let docs = yaml_docs("compose/docker-compose.yml");
    assert_eq!(docs.len(), 1);
    let c = &docs[0];
    let services = get(c, "services").as_mapping().unwrap();
    for s in [
        "redis",
        "gateway-1",
        "gateway-2",
        "nginx",
        "api",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(s), "compose lacks service {s}");
    }
    let compose_dir = repo().join("deploy/compose");
    for s in ["gateway-1", "gateway-2"] {
        let svc = get(c, &format!("services.{s}"));
        let ctx = compose_dir.join(string(svc, "build.context"));
        assert!(
            ctx.join(string(svc, "build.dockerfile")).is_file(),
            "{s}: dockerfile"
        );
        // The advertise address is the service's fixed IP on the network.
        let env = get(svc, "environment");
        let adv = string(env, "SWITCHBOARD_ADVERTISE_ADDR");
        let ip = string(svc, "networks.switchboard.ipv4_address");
        assert_eq!(adv, format!("{ip}:3002"), "{s}");
        // nginx's network is the trusted proxy range.
        assert_eq!(
            string(env, "SWITCHBOARD_SERVER__TRUSTED_PROXIES"),
            "172.28.0.0/24"
        );
        // A valid gateway configuration (secret from the operator's shell).
        let mut vars: Vec<(String, String)> = env
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect();
        for (k, v) in &mut vars {
            if k == "SWITCHBOARD_JWT_SECRET" {
                assert!(v.starts_with("${SWITCHBOARD_JWT_SECRET"), "{v}");
                *v = SECRET.to_string();
            }
        }
        check_config(&vars).unwrap_or_else(|e| panic!("compose {s}: {e}"));
    }
    // One network for all: a service outside it could not resolve the others.
    for (name, svc) in services {
        assert!(
            svc.get("networks")
                .and_then(|n| n.get("switchboard"))
                .is_some(),
            "compose service {name:?} is not on the switchboard network"
        );
    }
    let nginx = get(c, "services.nginx");
    let vol = string(nginx, "volumes.0");
    let src = vol.split(':').next().unwrap();
    assert!(compose_dir.join(src).is_file(), "nginx volume {src}");
    match find_tool("docker").map(|d| {
        Command::new(d)
            .args(["compose", "-f"])
            .arg(compose_dir.join("docker-compose.yml"))
            .args(["config", "-q"])
            .env("SWITCHBOARD_JWT_SECRET", SECRET)
            .output()
    }) {
        Some(Ok(out)) if out.status.success() => {}
        Some(Ok(out)) => skip(
            "docker compose config",
            &format!(
                "`docker compose` is not usable here: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or_default()
            ),
        ),
        _ => skip("docker compose config", "docker is not installed"),
    }
}

#[test]
fn pm2_ecosystem_loads() {
    let Some(node) = find_tool("node") else {
        skip("pm2 ecosystem require()", "node is not installed");
        return;
    };
    let out = Command::new(node)
        .current_dir(repo())
        .args([
            "-e",
            "const c = require('./deploy/pm2/ecosystem.config.js'); process.stdout.write(JSON.stringify(c))",
        ])
        .env_remove("SWITCHBOARD_GATEWAY_PORTS")
        .env_remove("SWITCHBOARD_HOST_IP")
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "require ecosystem.config.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps = cfg["apps"].as_array().expect("apps");
    let api = apps
        .iter()
        .find(|a| a["exec_mode"] == "cluster")
        .expect("a Node API in cluster mode");
    assert_ne!(api["script"], serde_json::Value::Null);
    let gateways: Vec<_> = apps
        .iter()
        .filter(|a| {
            a["script"]
                .as_str()
                .is_some_and(|s| s.ends_with("switchboard-gateway"))
        })
        .collect();
    assert!(!gateways.is_empty(), "no gateway app");
    let mut listens = Vec::new();
    for g in &gateways {
        assert_eq!(g["exec_mode"], "fork", "{g}");
        assert_eq!(g["interpreter"], "none", "{g}");
        assert_eq!(g["instances"], 1, "{g}");
        assert!(
            g["kill_timeout"].as_u64().unwrap() > DEFAULT_DEADLINE_MS,
            "kill_timeout must exceed the shutdown deadline"
        );
        let env: Vec<(String, String)> = g["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .chain([("SWITCHBOARD_JWT_SECRET".to_string(), SECRET.to_string())])
            .collect();
        check_config(&env).unwrap_or_else(|e| panic!("pm2 {}: {e}", g["name"]));
        listens.push(g["env"]["SWITCHBOARD_LISTEN"].clone());
    }
    listens.sort_by_key(|v| v.to_string());
    listens.dedup();
    assert_eq!(
        listens.len(),
        gateways.len(),
        "gateways need distinct ports"
    );
}

#[test]
fn dockerfile_and_dockerignore() {
    let text = deploy_file("docker/Dockerfile");
    let froms: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage build expected: {froms:?}");
    assert!(
        froms[0].contains("rust:") && froms[0].contains(" AS builder"),
        "{froms:?}"
    );
    // The last stage (the default target) runs as a non-root user.
    let last = text
        .rfind("\nFROM ")
        .map(|i| &text[i..])
        .expect("final stage");
    assert!(
        last.contains("FROM debian:") || last.contains("distroless"),
        "{last}"
    );
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("final stage has a USER");
    let uid = user.split(':').next().unwrap().trim();
    assert!(uid != "root" && uid != "0", "USER {user} is root");
    assert!(last.contains("EXPOSE 3002"));
    assert!(last.contains("HEALTHCHECK"));
    assert!(last.contains("ENTRYPOINT [\"/usr/local/bin/switchboard-gateway\"]"));

    let ignore = fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for p in ["target", "node_modules", ".git"] {
        assert!(ignore.lines().any(|l| l.contains(p)), ".dockerignore: {p}");
    }
    match find_tool("docker").map(|d| Command::new(d).arg("info").output()) {
        Some(Ok(out)) if out.status.success() => skip(
            "docker build",
            "a docker engine is available but building the image is too slow for the test suite",
        ),
        _ => skip(
            "docker build",
            "no docker engine here; only the Dockerfile text and its HEALTHCHECK command are checked",
        ),
    }
}

/// The image's HEALTHCHECK command (bash /dev/tcp, no curl) really detects a
/// healthy gateway and a dead one.
#[test]
fn dockerfile_healthcheck_command_works() {
    let text = deploy_file("docker/Dockerfile");
    let hc = text
        .find("HEALTHCHECK")
        .map(|i| &text[i..])
        .expect("HEALTHCHECK");
    let json_start = hc.find("CMD [").expect("exec-form CMD") + 4;
    let json_end = hc[json_start..].find("]\n").expect("end of CMD") + json_start + 1;
    let argv: Vec<String> = serde_json::from_str(&hc[json_start..json_end])
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not JSON: {e}"));
    let Some(bash) = find_tool(&argv[0]) else {
        skip("HEALTHCHECK command", &format!("{} not installed", argv[0]));
        return;
    };
    let gw = GatewayProcess::start(GatewayOptions::new().secret(SECRET)).expect("gateway");
    let run = |port: u16| {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace("3002", &port.to_string()))
            .collect();
        let mut child = Command::new(&bash).args(&args).spawn().expect("bash");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(
        run(gw.port()),
        "HEALTHCHECK failed against a healthy gateway"
    );
    let dead = switchboard_testkit::free_port();
    assert!(!run(dead), "HEALTHCHECK passed with nothing listening");
}

/// The compose volume of `svc` whose container path is `target`: its
/// source, resolved against `deploy/compose`.
fn volume_source(svc: &Yaml, target: &str) -> Option<std::path::PathBuf> {
    get(svc, "volumes").as_sequence()?.iter().find_map(|v| {
        let mut parts = v.as_str()?.split(':');
        let (src, dst) = (parts.next()?, parts.next()?);
        (dst == target).then(|| repo().join("deploy/compose").join(src))
    })
}

/// Every panel of the dashboard, the ones inside collapsed rows included.
fn dashboard_panels(panels: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(dashboard_panels(&p["panels"]));
    }
    out
}

/// Grafana and Prometheus in the compose file are wired to the shipped
/// files: the provisioned datasource is the one the dashboard names and
/// points at the Prometheus service; the dashboard provider's folder is
/// where the dashboard is mounted; Prometheus loads the shipped config and
/// alert rules and scrapes exactly the compose gateways.
#[test]
fn grafana_and_prometheus_provisioning() {
    let compose = &yaml_docs("compose/docker-compose.yml")[0];
    let services = get(compose, "services").as_mapping().unwrap();

    // The dashboard: valid JSON, unique panel ids, on the 24-column grid,
    // every datasource reference is the provisioned one.
    let dash: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/switchboard.json")).expect("dashboard JSON");
    assert_eq!(dash["uid"], "switchboard");
    let panels = dashboard_panels(&dash["panels"]);
    let mut ids = std::collections::BTreeSet::new();
    let mut uids = std::collections::BTreeSet::new();
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && pos["h"].as_u64().unwrap() > 0,
            "panel {id} gridPos {pos}"
        );
        for ds in std::iter::once(&p["datasource"])
            .chain(
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            )
            .filter(|d| !d.is_null())
        {
            assert_eq!(ds["type"], "prometheus", "panel {id}");
            uids.insert(ds["uid"].as_str().expect("datasource uid").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        uids.insert(v["datasource"]["uid"].as_str().unwrap().to_string());
    }
    let datasources: Yaml = serde_yaml::from_str(&deploy_file(
        "grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let ds = get(&datasources, "datasources.0");
    assert_eq!(
        uids.into_iter().collect::<Vec<_>>(),
        [string(ds, "uid")],
        "the dashboard must use only the provisioned datasource"
    );
    assert_eq!(string(ds, "type"), "prometheus");
    // The datasource URL is the compose Prometheus service on its port.
    let url = string(ds, "url");
    let host_port = url.strip_prefix("http://").expect("http:// datasource URL");
    let (host, port) = host_port.split_once(':').expect("host:port");
    assert!(
        services.contains_key(host),
        "datasource host {host} is not a compose service"
    );
    assert_eq!(port, "9090", "Prometheus listens on 9090");

    // Grafana mounts the provisioning folder and the dashboard where the
    // provider looks for it.
    let grafana = get(compose, "services.grafana");
    let provisioning =
        volume_source(grafana, "/etc/grafana/provisioning").expect("provisioning mount");
    for f in ["datasources/prometheus.yml", "dashboards/switchboard.yml"] {
        assert!(
            provisioning.join(f).is_file(),
            "{} lacks {f}",
            provisioning.display()
        );
    }
    let providers: Yaml = serde_yaml::from_str(&deploy_file(
        "grafana/provisioning/dashboards/switchboard.yml",
    ))
    .unwrap();
    let folder = string(get(&providers, "providers.0"), "options.path");
    let mounted = volume_source(grafana, &format!("{folder}/switchboard.json"))
        .expect("the dashboard is mounted into the provider's folder");
    assert_eq!(
        fs::canonicalize(mounted).unwrap(),
        fs::canonicalize(repo().join("deploy/grafana/switchboard.json")).unwrap()
    );
    let home = string(
        grafana,
        "environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    );
    assert_eq!(home, format!("{folder}/switchboard.json"));

    // Prometheus loads the shipped config, and the rule files it names sit
    // next to it in the container.
    let prometheus = get(compose, "services.prometheus");
    let config_path = get(prometheus, "command")
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config.file="))
        .expect("--config.file")
        .to_string();
    let config_src = volume_source(prometheus, &config_path).expect("config mounted");
    assert_eq!(
        fs::canonicalize(&config_src).unwrap(),
        fs::canonicalize(repo().join("deploy/prometheus/prometheus.yml")).unwrap()
    );
    let config: Yaml = serde_yaml::from_str(&deploy_file("prometheus/prometheus.yml")).unwrap();
    let config_dir = config_path.rsplit_once('/').unwrap().0;
    for rule_file in get(&config, "rule_files").as_sequence().unwrap() {
        let rule_file = rule_file.as_str().unwrap();
        let src = volume_source(prometheus, &format!("{config_dir}/{rule_file}"))
            .unwrap_or_else(|| panic!("rule file {rule_file} is not mounted next to the config"));
        assert!(src.is_file(), "{}", src.display());
    }

    // The scrape job covers exactly the compose gateways, on their port.
    let job = get(&config, "scrape_configs.0");
    assert_eq!(string(job, "job_name"), "switchboard");
    let mut targets: Vec<String> = get(job, "static_configs.0.targets")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    targets.sort();
    let mut gateways: Vec<String> = services
        .iter()
        .filter(|(_, svc)| {
            svc.get("image").and_then(Yaml::as_str) == Some("switchboard-gateway:local")
        })
        .map(|(name, svc)| {
            let listen = string(svc, "environment.SWITCHBOARD_LISTEN");
            let port = listen.rsplit_once(':').unwrap().1.to_string();
            format!("{}:{port}", name.as_str().unwrap())
        })
        .collect();
    gateways.sort();
    assert!(gateways.len() >= 2, "{gateways:?}");
    assert_eq!(
        targets, gateways,
        "Prometheus must scrape every compose gateway"
    );
    // Every dashboard query and alert selects that job, and only that job.
    let job_name = string(job, "job_name");
    let queries = promql::dashboard_queries()
        .into_iter()
        .chain(promql::alert_queries());
    for q in queries {
        let jobs: Vec<&str> = q
            .expr
            .match_indices("job=\"")
            .map(|(at, m)| {
                let rest = &q.expr[at + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert!(
            !jobs.is_empty() && jobs.iter().all(|j| *j == job_name),
            "{} must select job=\"{job_name}\": {}",
            q.source,
            q.expr
        );
    }
}
