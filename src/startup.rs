//! Builds the server: the route table, with the stateless half outside any session middleware.

use std::net::TcpListener;

use actix_session::{
    SessionMiddleware,
    config::{BrowserSession, CookieContentSecurity},
};
use actix_web::{
    App, HttpServer, Route,
    cookie::{Key, SameSite},
    dev::{Server, ServerHandle},
    http::header,
    middleware::{DefaultHeaders, from_fn},
    web,
};
use anyhow::Context as _;

use std::sync::Arc;

use crate::{
    config::Settings,
    db::Db,
    domain::{accounts, catalog, secs, snapshot::Catalog},
    leases::LiveHub,
    lifecycle::{self, Lifecycle},
    metrics::Metrics,
    session::{self, Store, guests::GuestGate},
    web::{
        Site, account, admin, auth, body, cart, errors,
        guard::{self, LoginLimits},
        inspector, live, observe, orders,
        public::{
            assets, health, metrics,
            pages::{self, PublicPages},
        },
    },
};

/// How often expired sessions and stale rate-limit entries are freed.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest form body accepted; larger ones get 413 and change nothing.
pub const FORM_LIMIT_BYTES: usize = 16 * 1024;

/// How often a starting instance whose database or session store did not answer asks again.
const READY_RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A bound, not yet running server. Used by `main` and by every test.
pub struct Application {
    port: u16,
    server: Server,
    db: Db,
    /// Session housekeeping and the catalog watcher of live leases; stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
    hub: Arc<LiveHub>,
    lifecycle: Lifecycle,
    /// The listener of `/metrics` alone, when `metrics_listen` is set.
    metrics_server: Option<(u16, Server)>,
}

/// Stops a running [`Application`]: ends every live lease (their streams close with
/// `lease-expired`), then stops the server.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    metrics_server: Option<ServerHandle>,
    hub: Arc<LiveHub>,
    lifecycle: Lifecycle,
}

impl Stopper {
    /// Begins the drain: `/healthz` answers 503 `draining` and every response closes its
    /// connection, while the server goes on serving. `false` when already draining.
    pub fn begin_drain(&self) -> bool {
        self.lifecycle.begin_drain()
    }

    /// Stops the server; `graceful` lets in-flight requests finish first.
    pub async fn stop(&self, graceful: bool) {
        self.hub.end_all();
        self.server.stop(graceful).await;
        if let Some(metrics) = &self.metrics_server {
            metrics.stop(graceful).await;
        }
    }
}

impl Application {
    /// Connects and migrates the database, seeds it on first start, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::open(&settings.database_url).await?;
        db.migrate().await?;
        tokio::task::spawn_blocking(accounts::prepare_hashing)
            .await
            .context("preparing password hashing")?;
        if catalog::seed_if_new(&db)
            .await
            .context("seeding the catalog")?
        {
            tracing::info!("seeded the catalog (first start of this database)");
        }

        let missing = crate::admin::bootstrap(&db, &settings.admin_users)
            .await
            .context("granting admin_users")?;
        if !missing.is_empty() {
            tracing::warn!(
                names = %missing.join(","),
                "admin_users names accounts that do not exist; nobody was made admin for them \
                 (grant the role once they register: statecart admin grant <username>)"
            );
        }

        // Built once and shared by every worker: a store or key per worker loses sessions.
        let keys = session::key::Keys::load(&settings)?;
        let key = keys.current.clone();
        let store = Store::build(&settings, &db)?;
        let limits = web::Data::new(LoginLimits::new(settings.login_rate_limit_per_minute));
        // Only a backend that keeps server state has guest records to bound.
        let guests = settings.session_backend.is_stateful().then(|| {
            web::Data::new(GuestGate::new(
                settings.guest_sessions_per_minute,
                &store,
                settings.max_guest_sessions,
            ))
        });
        let hub = LiveHub::new(settings.live_max_leases, settings.live_max_leases_per_user);
        let catalog = Catalog::load(db.clone())
            .await
            .context("reading the catalog")?;
        let metrics = web::Data::new(
            Metrics::new(
                settings.session_backend,
                Arc::clone(&hub),
                Arc::clone(&catalog),
            )
            .context("registering metrics")?,
        );
        // The catalog snapshot is loaded; the store may still be making its first connection
        // (Redis connects lazily). Make it now, before listening, so the first `/healthz` 200
        // means the first request is served without a 503; when it cannot, start anyway and
        // say "starting" until it can.
        let lifecycle = Lifecycle::default();
        let mut background = vec![
            spawn_housekeeping(store.clone(), limits.clone(), guests.clone()),
            tokio::spawn(Arc::clone(&hub).watch(db.clone(), Arc::clone(&catalog))),
        ];
        if answers(&db, &store).await {
            lifecycle.mark_ready();
            tracing::info!("ready: the database, the session store and the catalog answer");
        } else {
            tracing::warn!(
                "starting: the database or the session store does not answer yet; /healthz \
                 answers 503 until both do"
            );
            background.push(spawn_readiness(
                db.clone(),
                store.clone(),
                lifecycle.clone(),
            ));
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
        let store_data = web::Data::new(store.clone());
        let budget = web::Data::new(session::CookieBudget::new(
            settings.session_backend,
            &key,
            settings.cookie_name(),
            settings.cart_max_lines,
        ));
        let hub_data = web::Data::new(Arc::clone(&hub));
        let write_locks = web::Data::new(session::state::WriteLocks::new());
        let keys_data = web::Data::new(keys);
        let catalog_data = web::Data::new(catalog);
        let public_pages = web::Data::new(PublicPages::default());
        let lifecycle_data = web::Data::new(lifecycle.clone());
        let instance = settings.instance.clone();
        let metrics_server = match settings.metrics_listen {
            Some(address) => Some(metrics_server(
                address,
                metrics.clone(),
                store_data.clone(),
            )?),
            None => None,
        };
        let metrics_here = metrics_server.is_none();

        let server = HttpServer::new(move || {
            let sessions = session_middleware(&store, &key, &settings);
            let app = match &guests {
                Some(guests) => App::new().app_data(guests.clone()),
                None => App::new(),
            };
            app.app_data(site.clone())
                .app_data(db_data.clone())
                .app_data(settings_data.clone())
                .app_data(store_data.clone())
                .app_data(limits.clone())
                .app_data(budget.clone())
                .app_data(hub_data.clone())
                .app_data(write_locks.clone())
                .app_data(keys_data.clone())
                .app_data(catalog_data.clone())
                .app_data(public_pages.clone())
                .app_data(lifecycle_data.clone())
                .app_data(metrics.clone())
                .app_data(web::FormConfig::default().limit(FORM_LIMIT_BYTES))
                .wrap(from_fn(body::time_out_slow_bodies))
                .wrap(from_fn(errors::render_error_pages))
                .wrap(default_headers(&instance))
                .wrap(from_fn(observe::observe))
                .wrap(from_fn(lifecycle::close_while_draining))
                .configure(|cfg| routes(cfg, sessions, metrics_here))
        })
        .listen(listener)?
        // Signals are handled by `lib::run`, which drains first (see `lifecycle`) and ends live
        // leases before stopping: an open event stream would otherwise hold a graceful
        // shutdown for its whole timeout.
        .disable_signals()
        .run();

        Ok(Self {
            port: address.port(),
            server,
            db,
            background,
            hub,
            lifecycle,
            metrics_server,
        })
    }

    /// The port actually bound (useful with `listen = ...:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the `/metrics` listener, when `metrics_listen` gave it one of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            metrics_server: self.metrics_server.as_ref().map(|(_, s)| s.handle()),
            hub: Arc::clone(&self.hub),
            lifecycle: self.lifecycle.clone(),
        }
    }

    /// Serves until stopped (SIGINT/SIGTERM or the handle), then closes the database pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = match self.metrics_server {
            Some((_, metrics)) => {
                let (shop, metrics) = futures_util::future::join(self.server, metrics).await;
                shop.and(metrics)
            }
            None => self.server.await,
        };
        tracing::info!("requests finished; closing the database pool");
        for task in &self.background {
            task.abort();
        }
        self.db.close().await;
        tracing::info!("stopped; exiting");
        result
    }
}

/// The session middleware over the shared store and key, with the cookie attributes.
fn session_middleware(store: &Store, key: &Key, settings: &Settings) -> SessionMiddleware<Store> {
    let idle = secs(settings.idle_timeout);
    SessionMiddleware::builder(store.clone(), key.clone())
        .cookie_name(settings.cookie_name().to_owned())
        .cookie_content_security(CookieContentSecurity::Private)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_path("/".to_owned())
        .cookie_secure(settings.cookie_secure)
        // A browser-session cookie (no Max-Age): the browser keeps it until it closes, so when
        // the server ends a session for inactivity it can still say why. Server-side stores
        // drop state after the idle timeout on their own.
        .session_lifecycle(
            BrowserSession::default().state_ttl(actix_web::cookie::time::Duration::seconds(idle)),
        )
        .build()
}

/// Headers on every response: the instance, and what browsers should refuse (framing,
/// sniffing, scripts and styles from elsewhere, the full URL in referrers). Error responses
/// that skip this middleware get the same from `errors::render_error_pages`.
fn default_headers(instance: &str) -> DefaultHeaders {
    crate::web::SECURITY_HEADERS.iter().fold(
        DefaultHeaders::new().add(("X-Statecart-Instance", instance.to_owned())),
        |headers, &(name, value)| headers.add((name, value)),
    )
}

/// Whether the database and the session store both answer now.
async fn answers(db: &Db, store: &Store) -> bool {
    let (database, sessions) = futures_util::future::join(db.ping(), store.ping()).await;
    database && sessions
}

/// Asks the database and the session store again until both answer, then marks the instance
/// ready (a drain begun meanwhile stays a drain).
fn spawn_readiness(db: Db, store: Store, lifecycle: Lifecycle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(READY_RETRY_EVERY).await;
            if answers(&db, &store).await {
                if lifecycle.mark_ready() {
                    tracing::info!("ready: the database, the session store and the catalog answer");
                }
                return;
            }
        }
    })
}

fn spawn_housekeeping(
    store: Store,
    limits: web::Data<LoginLimits>,
    guests: Option<web::Data<GuestGate>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            every.tick().await;
            store.housekeeping().await;
            limits.housekeeping().await;
            if let Some(guests) = &guests {
                guests.housekeeping();
            }
        }
    })
}

/// `/metrics` on a listener of its own (`metrics_listen`): the shop's port is public, metrics
/// are for the operator, so this address can stay on a private network or behind a firewall.
/// One worker: a scrape every few seconds needs no more.
fn metrics_server(
    address: std::net::SocketAddr,
    metrics: web::Data<Metrics>,
    store: web::Data<Store>,
) -> anyhow::Result<(u16, Server)> {
    let listener =
        TcpListener::bind(address).with_context(|| format!("binding metrics_listen {address}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "metrics on http://{bound}/metrics");
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .app_data(store.clone())
            .service(web::resource("/metrics").route(get_or_head().to(metrics::metrics)))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .run();
    Ok((bound.port(), server))
}

/// The whole route table. The stateless half comes first and sees no session; every other
/// path falls through to the stateful scope, the only one wrapped in the session middleware.
/// `/metrics` is here unless `metrics_listen` gave it a listener of its own.
fn routes(cfg: &mut web::ServiceConfig, sessions: SessionMiddleware<Store>, metrics_here: bool) {
    // Stateless: public, cacheable, never a cookie.
    cfg.service(web::resource("/").route(get_or_head().to(pages::home)))
        .service(web::resource("/about").route(get_or_head().to(pages::about)))
        .service(
            web::resource("/compare").route(get_or_head().to(crate::web::public::compare::page)),
        )
        .service(web::resource("/products").route(get_or_head().to(pages::products)))
        .service(web::resource("/products.json").route(get_or_head().to(pages::products_json)))
        .service(web::resource("/products/{id}").route(get_or_head().to(pages::product)))
        .service(web::resource("/static/{name}").route(get_or_head().to(assets::serve)))
        .service(web::resource("/healthz").route(get_or_head().to(health::healthz)));
    if metrics_here {
        cfg.service(web::resource("/metrics").route(get_or_head().to(metrics::metrics)));
    }

    // Stateful. Middleware, outermost first: refuse cross-site forms, note the client address
    // (new guest sessions are limited by it), turn a store failure into 503, load/save the
    // session, enforce its timeouts, no-store; then, on /login and /register only, limit
    // attempts per address.
    cfg.service(
        web::scope("")
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .wrap(from_fn(session::enforce_timeouts))
            .wrap(sessions)
            .wrap(from_fn(session::key::reseal_previous_keys))
            .wrap(from_fn(guard::session_store_unavailable))
            .wrap(from_fn(guard::note_client_address))
            .wrap(from_fn(guard::refuse_cross_origin))
            // The login limit wraps the resources themselves, so it sees every request the
            // router gives them, whatever spelling of the path (`/%6Cogin`) got it there.
            .service(
                web::resource("/register")
                    .wrap(from_fn(guard::limit_login_posts))
                    .route(web::get().to(auth::register_form))
                    .route(web::post().to(auth::register)),
            )
            .service(
                web::resource("/login")
                    .wrap(from_fn(guard::limit_login_posts))
                    .route(web::get().to(auth::login_form))
                    .route(web::post().to(auth::login)),
            )
            .route("/logout", web::post().to(auth::logout))
            .route("/account", web::get().to(account::page))
            .route("/account/sessions/revoke", web::post().to(account::revoke))
            .route(
                "/account/sessions/revoke-others",
                web::post().to(account::revoke_others),
            )
            .route("/cart", web::get().to(cart::page))
            .route("/cart/add", web::post().to(cart::add))
            .route("/cart/update", web::post().to(cart::update))
            .route("/cart/clear", web::post().to(cart::clear))
            .route("/cart/live", web::get().to(live::stream))
            .route("/cart/changes", web::get().to(live::changes))
            .route("/checkout", web::post().to(cart::checkout))
            .route("/orders", web::get().to(orders::list))
            .route("/orders/{id}", web::get().to(orders::show))
            .route("/admin/products", web::get().to(admin::page))
            .route("/admin/products", web::post().to(admin::update))
            .route("/session", web::get().to(inspector::page))
            .route("/session.json", web::get().to(inspector::json))
            .default_service(web::to(not_found)),
    );
}

fn get_or_head() -> Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

async fn not_found() -> Result<actix_web::HttpResponse, errors::AppError> {
    Err(errors::AppError::NotFound)
}
