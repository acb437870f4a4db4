//! Builds the server: the route table, with the stateless half outside any session middleware.

use std::{net::TcpListener, time::Instant};

use actix_web::{
    App, HttpServer, Route,
    body::MessageBody,
    dev::{Server, ServerHandle, ServiceRequest, ServiceResponse},
    guard,
    middleware::{DefaultHeaders, Next, from_fn},
    web,
};
use anyhow::Context as _;
use tracing::Instrument as _;

use crate::{
    config::Settings,
    db::Db,
    domain::catalog,
    web::{Site, assets, errors, pages},
};

/// Largest form body accepted; larger ones get 413 and change nothing.
pub const FORM_LIMIT_BYTES: usize = 16 * 1024;

/// A bound, not yet running server. Used by `main` and by every test.
pub struct Application {
    port: u16,
    server: Server,
    db: Db,
}

impl Application {
    /// Connects and migrates the database, seeds it on first start, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database_url).await?;
        db.migrate().await?;
        if catalog::seed_if_new(&db)
            .await
            .context("seeding the catalog")?
        {
            tracing::info!("seeded the catalog (first start of this database)");
        }

        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "listening on http://{address}");

        let site = web::Data::new(Site {
            instance: settings.instance.clone(),
            backend: settings.session_backend,
            asset_version: assets::VERSION.as_str(),
        });
        let db_data = web::Data::new(db.clone());
        let settings_data = web::Data::new(settings.clone());
        let instance = settings.instance.clone();

        let server = HttpServer::new(move || {
            App::new()
                .app_data(site.clone())
                .app_data(db_data.clone())
                .app_data(settings_data.clone())
                .app_data(web::FormConfig::default().limit(FORM_LIMIT_BYTES))
                .wrap(from_fn(errors::render_error_pages))
                .wrap(DefaultHeaders::new().add(("X-Statecart-Instance", instance.clone())))
                .wrap(from_fn(log_request))
                .configure(routes)
        })
        .listen(listener)?
        .run();

        Ok(Self {
            port: address.port(),
            server,
            db,
        })
    }

    /// The port actually bound (useful with `listen = ...:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGINT/SIGTERM or the handle), then closes the database pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.db.close().await;
        tracing::info!("stopped");
        result
    }
}

/// The whole route table. The stateless half comes first and sees no session; every other
/// path falls through to the stateful scope.
fn routes(cfg: &mut web::ServiceConfig) {
    // Stateless: public, cacheable, never a cookie.
    cfg.service(web::resource("/").route(get_or_head().to(pages::home)))
        .service(web::resource("/about").route(get_or_head().to(pages::about)))
        .service(web::resource("/products").route(get_or_head().to(pages::products)))
        .service(web::resource("/products.json").route(get_or_head().to(pages::products_json)))
        .service(web::resource("/products/{id}").route(get_or_head().to(pages::product)))
        .service(web::resource("/static/{name}").route(get_or_head().to(assets::serve)))
        .service(web::resource("/healthz").route(get_or_head().to(pages::healthz)));

    // Stateful: login, cart, orders and the inspector arrive here with the session middleware.
    cfg.default_service(web::to(not_found));
}

fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn not_found() -> Result<actix_web::HttpResponse, errors::AppError> {
    Err(errors::AppError::NotFound)
}

/// One span per request; one line when it completes with status and latency.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    let res = next.call(req).instrument(span.clone()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match &res {
        Ok(res) => tracing::info!(status = res.status().as_u16(), latency_ms, "done"),
        Err(err) => tracing::warn!(error = %err, latency_ms, "failed"),
    });
    res
}
