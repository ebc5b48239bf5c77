//! The Jet Fleet HTTP service: authenticates, authorizes, validates and writes; it never runs
//! workflow nodes. Routes live in `routes/`, one `#[OpenApi]` struct per resource.
#![doc = include_str!("../README.md")]

pub mod edge;
pub mod error;
pub mod metrics;
pub mod notify_hub;
pub mod request_span;
pub mod routes;
pub mod run_wait;
pub mod security;
pub mod spec_finish;
pub mod state;
pub mod stream_limits;
pub mod strict_body;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, EndpointExt, Route, Server};
use poem_openapi::OpenApiService;
use routes::{
    api_keys::ApiKeysApi, app_pages::AppPagesApi, audit::AuditApi, auth::AuthApi,
    cronjobs::CronJobsApi, datasources::DatasourcesApi, dlq::DlqApi, health::HealthApi,
    human::HumanApi, instances::InstancesApi, listeners::ListenersApi, queries::QueriesApi,
    roles::RolesApi, tenants::TenantsApi, users::UsersApi, webhooks::WebhooksApi,
    widgets::WidgetsApi, workflows::WorkflowsApi,
};
pub use state::AppState;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

type Apis = (
    HealthApi,
    AuthApi,
    TenantsApi,
    UsersApi,
    RolesApi,
    ApiKeysApi,
    AuditApi,
    WorkflowsApi,
    InstancesApi,
    HumanApi,
    DatasourcesApi,
    QueriesApi,
    AppPagesApi,
    WidgetsApi,
    // poem-openapi implements `OpenApi` for tuples of at most 16: later APIs nest here.
    (CronJobsApi, ListenersApi),
    (DlqApi, WebhooksApi),
);

/// The OpenAPI service: every operation, described.
pub fn openapi(state: &AppState) -> OpenApiService<Apis, ()> {
    let apis = (
        HealthApi {
            state: state.clone(),
        },
        AuthApi {
            state: state.clone(),
        },
        TenantsApi {
            state: state.clone(),
        },
        UsersApi {
            state: state.clone(),
        },
        RolesApi {
            state: state.clone(),
        },
        ApiKeysApi {
            state: state.clone(),
        },
        AuditApi {
            state: state.clone(),
        },
        WorkflowsApi {
            state: state.clone(),
        },
        InstancesApi {
            state: state.clone(),
        },
        HumanApi {
            state: state.clone(),
        },
        DatasourcesApi {
            state: state.clone(),
        },
        QueriesApi {
            state: state.clone(),
        },
        AppPagesApi {
            state: state.clone(),
        },
        WidgetsApi {
            state: state.clone(),
        },
        (
            CronJobsApi {
                state: state.clone(),
            },
            ListenersApi {
                state: state.clone(),
            },
        ),
        (
            DlqApi {
                state: state.clone(),
            },
            WebhooksApi {
                state: state.clone(),
            },
        ),
    );
    OpenApiService::new(apis, "Jet Fleet API", env!("CARGO_PKG_VERSION")).description(
        "The backend engine of Jet Admin. Authenticate with `Authorization: api_key <64 hex>` \
         (API keys) or `Authorization: Bearer <JWT>` (users). Errors are `{code, message}` \
         with stable codes. Lists take `page` (from 1) and `pageSize` (1–200). Webhook \
         deliveries (`/webhooks/v1/inbound/…`) carry a webhook token or signature instead.",
    )
}

/// The checked-in spec (`openapi/openapi.json`) is exactly this string.
pub fn spec_json() -> String {
    // Spec generation needs the API structs but never touches the database: a lazy pool
    // that is never used keeps it a pure function. The pool wants a Tokio context to exist.
    let runtime = tokio::runtime::Handle::try_current().is_err().then(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds")
    });
    let _context = runtime.as_ref().map(|rt| rt.enter());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://spec@127.0.0.1/spec")
        .expect("a static URL parses");
    let state = AppState::new(
        pool,
        jet_shared::config::Config::from_lookup(|_| None).expect("defaults"),
    )
    .expect("default config has no JWT keys to parse");
    spec_finish::finish(&openapi(&state).spec())
}

/// The whole HTTP application: API, spec, docs UI, and the request boundary.
pub fn app(state: AppState) -> impl Endpoint {
    let api = openapi(&state);
    let docs = api.swagger_ui();
    let finished = spec_finish::finish(&api.spec());
    let routes = edge::Routes::from_spec(&finished);
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(finished.clone())
    });
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", metrics::endpoint(&state))
        .around(edge::around)
        .data(state)
        .data(routes)
        .around(metrics::track)
        .with(request_span::RequestSpan)
}

/// Binds `addr`; returns the bound address (useful with port 0) and the bound acceptor.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(SocketAddr, impl Acceptor)> {
    let acceptor = TcpListener::bind(addr)
        .into_acceptor()
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| anyhow::anyhow!("bound listener has no socket address"))?;
    Ok((local, acceptor))
}

/// How long a stopping server waits for in-flight requests before it drops them.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting, ends the SSE streams cleanly and
/// drains in-flight requests for up to [`DRAIN_LIMIT`].
pub async fn serve(
    acceptor: impl Acceptor + 'static,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let streams = state.streams.clone();
    let stopping = async move {
        shutdown.await;
        tracing::info!(
            "draining: no new connections; in-flight requests finish, event streams end"
        );
        streams.close();
    };
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(state), stopping, Some(DRAIN_LIMIT))
        .await?;
    tracing::info!("jet-api stopped");
    Ok(())
}

/// Everything `jet-api` does after reading config: pool, migration check, serve.
pub async fn run(config: jet_shared::config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let url = config.require_database_url()?.to_owned();
    let pool = jet_shared::db::connect(&url, config.db_max_connections)
        .await
        .context("connecting to DATABASE_URL")?;
    let pending = jet_shared::db::pending_migrations(&pool).await?;
    if !pending.is_empty() {
        tracing::warn!(
            pending = pending.len(),
            "migrations pending: run `jet migrate`; /ready reports not ready"
        );
    }
    let addr = config.api_addr;
    let state = AppState::new(pool.clone(), config)?;
    // The first signal drains; a second one exits without waiting for what is in flight.
    let mut signals = jet_shared::lifecycle::Signals::install();
    let shutdown = async move {
        let first = signals.recv().await;
        tracing::info!(signal = first, "stopping");
        tokio::spawn(async move {
            let second = signals.recv().await;
            tracing::warn!(
                signal = second,
                "second signal: exiting without finishing in-flight requests"
            );
            std::process::exit(0)
        });
    };
    let (local, acceptor) = bind(addr).await?;
    tracing::info!(%local, "jet-api listening");
    serve(acceptor, state, shutdown).await?;
    pool.close().await;
    Ok(())
}
