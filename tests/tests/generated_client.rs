//! A client generated from `openapi/openapi.json` with openapi-python-client works against the
//! real service without hand edits: the generator reports no warning (no endpoint or schema
//! dropped), and the generated code creates a role and a key, lists, and reads typed errors.

use jet_tests::TestApp;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned so the test means the same thing on every machine.
const GENERATOR: &str = "openapi-python-client==0.29.1";
const FORMATTER: &str = "ruff==0.17.6";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

/// A virtualenv under target/ with the generator, created once and reused.
fn venv() -> PathBuf {
    let venv = workspace().join("target/client-venv");
    let marker = venv.join(format!("installed-{GENERATOR}-{FORMATTER}"));
    if !marker.exists() {
        output(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        output(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", GENERATOR, FORMATTER]),
        );
        std::fs::write(&marker, b"").expect("marker");
    }
    venv
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // PATH for the generator's formatter
async fn a_generated_python_client_works_without_hand_edits() {
    let venv = venv();
    let out_dir =
        std::env::temp_dir().join(format!("jet-client-{}", uuid::Uuid::new_v4().simple()));
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = output(
        Command::new(venv.join("bin/openapi-python-client"))
            .args(["generate", "--path"])
            .arg(workspace().join("openapi/openapi.json"))
            .arg("--output-path")
            .arg(&out_dir)
            .env("PATH", path),
    );
    assert!(
        !log.to_lowercase().contains("warning"),
        "the generator dropped something:\n{log}"
    );

    let app = TestApp::spawn().await;
    let admin = app.admin("Generated").await;
    let script = workspace().join("tests/client/smoke.py");
    // Async: the service runs on this test's runtime and must keep answering meanwhile.
    let run = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(&app.base)
        .arg(admin.tenant_id.to_string())
        .arg(admin.raw.api_key.expose())
        .env("PYTHONPATH", &out_dir)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the generated client finishes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client script failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(seen["role_title"], "generated");
    assert_eq!(
        seen["role_permissions"],
        serde_json::json!(["tenant:role:list"])
    );
    assert_eq!(seen["key_length"], 64);
    assert_eq!(
        seen["restricted_list_total"], 2,
        "the global ADMIN role and the new one"
    );
    assert_eq!(
        (seen["denied_status"].as_u64(), seen["denied_code"].as_str()),
        (Some(403), Some("permission_denied"))
    );
    assert_eq!(
        (
            seen["missing_status"].as_u64(),
            seen["missing_code"].as_str()
        ),
        (Some(404), Some("not_found"))
    );
    assert_eq!(seen["tenant_api_keys"], 2);
    assert_eq!(seen["listed_keys"], 2);
    assert_eq!(seen["auth_type_is_enum"], true);
    assert_eq!(seen["auth_type"], "API_KEY");
    assert_eq!(
        (
            seen["empty_title_status"].as_u64(),
            seen["empty_title_code"].as_str()
        ),
        (Some(400), Some("invalid_request"))
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
