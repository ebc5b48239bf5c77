//! `jet-worker`: a stateless worker replica. `--roles a,b` (or `JET_WORKER_ROLES`) selects
//! roles; all run by default.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = jet_shared::config::Config::from_env()?;
    let _telemetry = jet_shared::telemetry::init(&config, "jet-worker");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let roles_arg = match args.as_slice() {
        [] => None,
        [flag, value] if flag == "--roles" => Some(value.as_str()),
        _ => anyhow::bail!("usage: jet-worker [--roles maintenance,…]  (or set JET_WORKER_ROLES)"),
    };
    let roles = jet_worker::parse_roles(roles_arg.or(config.worker_roles.as_deref()))
        .map_err(anyhow::Error::msg)?;
    jet_worker::run(config, roles).await
}
