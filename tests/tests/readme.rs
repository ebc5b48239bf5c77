//! The README as a new user meets it: the "Run a workflow" walkthrough runs as written (bash,
//! curl, jq, python3) against the real service and prints what the README says it prints; and
//! every file or folder of this repository that the README names exists, with nothing
//! pointing outside it.

use jet_tests::TestApp;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(workspace().join("README.md")).expect("README.md")
}

/// The first ```sh block after the heading `heading`.
fn shell_block(text: &str, heading: &str) -> String {
    let section = &text[text.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block's end");
    section[start..start + end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_a_workflow_walkthrough_works_as_written() {
    let script = shell_block(&readme(), "### Run a workflow");
    // What the README shows each command printing: the `# {…}` comment lines, in order.
    let expected: Vec<Value> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# "))
        .filter(|l| l.starts_with('{') || l.starts_with('"'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(expected.len() >= 2, "the walkthrough shows its output");

    let app = TestApp::with_workers().await;
    let admin = app.admin("Readme").await;
    // Async: the service runs on this test's runtime and must keep answering meanwhile.
    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("API", format!("{}/api/v1", app.base))
        .env("T", admin.tenant_id.to_string())
        .env("K", admin.raw.api_key.expose())
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the walkthrough finishes")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(printed, expected, "what the README says it prints");
}

#[test]
fn the_readme_names_only_files_in_this_repository() {
    let text = readme();
    let root = workspace();
    assert!(
        !text.contains("../"),
        "the README points outside the repository"
    );
    // Top-level entries of the repository: a backticked path starting with one is checked.
    let top: Vec<String> = std::fs::read_dir(&root)
        .expect("workspace")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "target" && n != ".git" && n != ".jet")
        .collect();
    let mut named = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        let path = part.trim_start_matches("./");
        let first = path.split('/').next().unwrap_or_default();
        let markdown = path.ends_with(".md") && !path.contains(' ');
        if i % 2 == 1
            && (top.iter().any(|t| t == first) || markdown)
            && !path.contains(['<', '*', '…', ' '])
        {
            named.push(path.to_owned());
        }
    }
    // Markdown links to files, not to anchors or the web.
    for link in text.split("](").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        if !target.starts_with('#') && !target.starts_with("http") {
            named.push(target.to_owned());
        }
    }
    assert!(
        named
            .iter()
            .any(|p| p == "tests/clients/ts/package-lock.json"),
        "the check sees the README's paths: {named:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "the README names what the repository lacks: {missing:?}"
    );
}
