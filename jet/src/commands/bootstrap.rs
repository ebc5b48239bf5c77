//! `jet bootstrap`: a tenant and an admin API key against any database.

use super::flag_value;
use anyhow::Context;
use jet_shared::bootstrap::{AdminUser, Bootstrapped, bootstrap};
use jet_shared::config::Config;

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = jet_shared::telemetry::init(&config, "jet");
    let title = flag_value(args, "--tenant")?.unwrap_or("Default");
    let admin = match (
        flag_value(args, "--admin-email")?,
        flag_value(args, "--admin-firebase-id")?,
    ) {
        (Some(email), Some(subject)) => Some(AdminUser {
            email: email.into(),
            firebase_id: subject.into(),
        }),
        (None, None) => None,
        _ => anyhow::bail!("--admin-email and --admin-firebase-id go together"),
    };
    let pool = jet_shared::db::connect(config.require_database_url()?, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    let done = bootstrap(&pool, title, admin.as_ref()).await?;
    print_bootstrapped(&done, None);
    Ok(())
}

/// Prints what bootstrap made; with an API base URL, an example request too.
pub fn print_bootstrapped(done: &Bootstrapped, api_base: Option<&str>) {
    println!(
        "Tenant:    {} ({})",
        done.tenant.tenant_id, done.tenant.tenant_title
    );
    if let Some(user) = &done.admin_user {
        println!(
            "Admin:     {} (firebaseID {})",
            user.email, user.firebase_id
        );
    }
    println!("Admin key: {}", done.api_key.expose());
    println!("           (shown once: it is stored only as a hash)");
    if let Some(base) = api_base {
        println!("Try:");
        println!(
            "  curl -s -H 'Authorization: api_key {}' {base}/api/v1/tenants/{}/roles",
            done.api_key.expose(),
            done.tenant.tenant_id
        );
    }
}
