//! `jet openapi`: print, write or check `openapi/openapi.json`.

use std::path::PathBuf;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let spec = jet_api::spec_json();
    match args.first().map(String::as_str) {
        None => print!("{spec}"),
        Some("--write") => {
            std::fs::write(spec_path(), &spec)?;
            println!("wrote {}", spec_path().display());
        }
        Some("--check") => {
            let on_disk = std::fs::read_to_string(spec_path()).unwrap_or_default();
            anyhow::ensure!(
                on_disk == spec,
                "openapi/openapi.json is out of date: run `cargo run -p jet -- openapi --write`"
            );
            println!("openapi/openapi.json is current");
        }
        Some(other) => anyhow::bail!("unknown option `{other}` (use --write or --check)"),
    }
    Ok(())
}
