//! `jet-api`: the HTTP service. Configuration comes from the environment (`.env.example`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = jet_shared::config::Config::from_env()?;
    let _telemetry = jet_shared::telemetry::init(&config, "jet-api");
    jet_api::run(config).await
}
