//! A TypeScript client generated from `openapi/openapi.json` (openapi-typescript types,
//! openapi-fetch calls, versions pinned by `tests/clients/ts/package-lock.json`) type-checks
//! under `tsc --strict` and drives the real service: save a workflow with an approval step,
//! run it with run-and-wait, poll, answer the approval, read the output, and read typed errors.
//! A spec change that breaks the client's types fails here.

use jet_tests::TestApp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sources() -> PathBuf {
    workspace().join("tests/clients/ts")
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn copy(name: &str, into: &Path) {
    std::fs::copy(sources().join(name), into.join(name))
        .unwrap_or_else(|e| panic!("copy {name}: {e}"));
}

/// `npm ci` from the committed lockfile into a folder under target/, once per lockfile.
fn installed() -> PathBuf {
    let dir = workspace().join("target/ts-client");
    let lock = std::fs::read(sources().join("package-lock.json")).expect("package-lock.json");
    let marker = dir.join(format!("installed-{}", hex::encode(Sha256::digest(&lock))));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("target/ts-client");
        copy("package.json", &dir);
        copy("package-lock.json", &dir);
        output(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        );
        std::fs::write(&marker, b"").expect("marker");
    }
    dir
}

/// A fresh build folder per run (tests may run concurrently) sharing the installed modules.
fn build() -> PathBuf {
    let modules = installed();
    let dir = std::env::temp_dir().join(format!("jet-ts-client-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("generated")).expect("build dir");
    std::os::unix::fs::symlink(modules.join("node_modules"), dir.join("node_modules"))
        .expect("link node_modules");
    for name in ["package.json", "tsconfig.json", "scenario.ts"] {
        copy(name, &dir);
    }
    let log = output(
        Command::new(modules.join("node_modules/.bin/openapi-typescript"))
            .arg(workspace().join("openapi/openapi.json"))
            .args(["--output", "generated/api.d.ts"])
            .current_dir(&dir),
    );
    assert!(
        !log.to_lowercase().contains("warn"),
        "openapi-typescript warned:\n{log}"
    );
    // Type errors fail the build (noEmitOnError): the scenario must compile under --strict.
    output(
        Command::new(modules.join("node_modules/.bin/tsc"))
            .args(["-p", "tsconfig.json", "--strict"])
            .current_dir(&dir),
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typescript_client_type_checks_and_drives_a_human_step_run() {
    let dir = build();
    let app = TestApp::with_workers().await;
    let admin = app.admin("TypeScript").await;
    // Async: the service runs on this test's runtime and must keep answering meanwhile.
    let run = tokio::process::Command::new("node")
        .arg(dir.join("dist/scenario.js"))
        .arg(&app.base)
        .arg(admin.tenant_id.to_string())
        .arg(admin.raw.api_key.expose())
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the scenario finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scenario failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // Run-and-wait on a run that waits for a person: the running instance, in time.
    assert_eq!(seen["waitedHttpStatus"], 200);
    assert_eq!(seen["waitedStatus"], "RUNNING");
    assert_eq!(seen["requestType"], "approval");
    assert_eq!(
        (&seen["invalidStatus"], &seen["invalidCode"]),
        (&json!(422), &json!("validation_failed"))
    );
    assert_eq!(seen["approvedStatus"], "COMPLETED");
    assert_eq!(
        seen["approvedOutput"]["output"],
        json!({"verdict": "shipped"})
    );
    assert_eq!(
        (&seen["againStatus"], &seen["againCode"]),
        (&json!(409), &json!("request_not_pending"))
    );
    // Run-and-wait on a quick run: status and output in the one response.
    assert_eq!(seen["oneTripHttpStatus"], 200);
    assert_eq!(seen["oneTripStatus"], "COMPLETED");
    assert_eq!(
        seen["oneTripOutput"],
        json!({"input": {"who": "typescript"}, "output": {"hello": "typescript"}})
    );
    assert_eq!(
        (&seen["missingStatus"], &seen["missingCode"]),
        (&json!(404), &json!("not_found"))
    );
    assert_eq!(
        (&seen["tooLongStatus"], &seen["tooLongCode"]),
        (&json!(400), &json!("invalid_parameter"))
    );
    // Enums and title bounds: refused by the server too when a caller bypasses the types.
    assert_eq!(seen["ended"], "COMPLETED");
    assert_eq!(
        (&seen["badTypeStatus"], &seen["badTypeCode"]),
        (&json!(400), &json!("invalid_type"))
    );
    assert_eq!(
        (&seen["badPolicyStatus"], &seen["badPolicyCode"]),
        (&json!(400), &json!("invalid_type"))
    );
    assert_eq!(
        (&seen["emptyTitleStatus"], &seen["emptyTitleCode"]),
        (&json!(400), &json!("invalid_request"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
