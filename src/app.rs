//! The request handler: route -> (authorise) -> resolve -> respond, or pass through.
//!
//! `handle` never fails: every error becomes a Matrix JSON response here, in one place, and
//! every request is logged once (see `access_log`).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};

use crate::access_log::UploadRecord;
use crate::auth::{self, FederationVerdict, TokenChecker, Verdict};
use crate::body::{self, Body};
use crate::budget::MemoryBudget;
use crate::cache::MediaCache;
use crate::capabilities::Advertisement;
use crate::config::{Config, GatewayMode, ThumbnailMethod};
use crate::denylist::Denylists;
use crate::error::RequestError;
use crate::forwarding::Peer;
use crate::homeserver::{Homeserver, Whoami};
use crate::ipfs::gateway::{GatewaySettings, Mode};
use crate::ipfs::pool::{Gateways, RetrievalSettings};
use crate::media::headers;
use crate::media::query::MediaQuery;
use crate::media::sniff;
use crate::media::thumbnail::{
    Limits as ThumbnailLimits, Method as ThumbnailMethodKind, ThumbnailSize,
};
use crate::reload::Changes;
use crate::resolve::{FetchLimits, Resolver};
use crate::respond::content::Content;
use crate::respond::content::Waits;
use crate::respond::thumbnail::{self, Thumbnailer};
use crate::respond::{download, federation};
use crate::router::{self, Access, Action, MediaRequest, Route, RouteConfig};
use crate::upload::{UploadError, Uploader};

pub struct App {
    homeserver: Homeserver,
    tokens: TokenChecker,
    resolver: Resolver,
    /// Reloadable (SIGHUP), like the gateways inside the resolver and the denylist.
    waits: ArcSwap<Waits>,
    denylist: Arc<Denylists>,
    /// The configuration in force, to tell what a reload changes.
    config: Mutex<Config>,
    legacy_unauthenticated: bool,
    routes: RouteConfig,
    advertisement: Option<Advertisement>,
    thumbnails: Option<Thumbnailer>,
    /// With `upload.enabled`.
    uploader: Option<Uploader>,
}

/// Why the app could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the gateway client: {0}")]
    Gateways(#[from] reqwest::Error),
    #[error("cannot read the denylist: {0}")]
    Denylist(#[from] crate::denylist::LoadError),
    #[error("cannot build the upload store client: {0}")]
    Store(reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot build the gateway clients: {0}")]
    Gateways(reqwest::Error),
}

/// The `[[gateways]]` entries as the IPFS layer uses them.
fn gateway_settings(config: &Config) -> Vec<GatewaySettings> {
    config
        .gateways
        .iter()
        .map(|gateway| GatewaySettings {
            base: gateway.url.as_str().trim_end_matches('/').to_owned(),
            mode: match gateway.effective_mode() {
                GatewayMode::Trusted => Mode::Trusted,
                GatewayMode::Trustless => Mode::Trustless,
            },
            timeout: gateway.timeout,
            authorization: gateway
                .authorization
                .as_deref()
                .map(|value| HeaderValue::from_str(value).expect("validated in config")),
            max_idle_connections: gateway.max_idle_connections,
        })
        .collect()
}

fn retrieval_settings(config: &Config) -> RetrievalSettings {
    let r = &config.retrieval;
    RetrievalSettings {
        hedge_delay: r.hedge_delay,
        bench_time: r.bench_time,
        probe_interval: r.probe_interval,
        max_dag_blocks: r.max_dag_blocks,
    }
}

fn waits(config: &Config) -> Waits {
    Waits {
        default: config.media.default_timeout,
        max: config.media.max_timeout,
    }
}

impl App {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let homeserver = Homeserver::new(
            &config.homeserver.url,
            config.homeserver.connect_timeout,
            config.server.connection_buffer.as_u64() as usize,
        );
        let tokens = TokenChecker::new(
            homeserver.clone(),
            config.auth.token_cache_ttl,
            config.auth.token_cache_entries,
        );
        let gateways = Arc::new(Gateways::new(
            &gateway_settings(config),
            &retrieval_settings(config),
        )?);
        gateways.spawn_probes();
        let cache = MediaCache::new(config.cache.max_bytes.as_u64());
        let denylist = Arc::new(Denylists::load(
            &config.denylist.paths,
            config.denylist.watch_interval,
        )?);
        let purge = cache.clone();
        denylist.spawn_watch(move |list| purge.remove_blocked(list));
        // One count of what running fetches and thumbnail renders hold outside the cache.
        let budget = Arc::new(MemoryBudget::new(config.cache.max_fetch_bytes.as_u64()));
        let thumbnails = config
            .thumbnails
            .enabled
            .then(|| thumbnailer(config, cache.clone(), Arc::clone(&budget)));
        let uploader = match config.upload.enabled {
            true => Some(
                Uploader::new(
                    upload_settings(config),
                    cache.clone(),
                    Arc::clone(&denylist),
                    homeserver.clone(),
                    Arc::clone(&gateways),
                )
                .map_err(BuildError::Store)?,
            ),
            false => None,
        };
        // `m.ipfs` is also how MSC2706 clients learn that the pin endpoint is there: said
        // whenever uploads (and so pins) are on.
        let advertise = config.capabilities.advertise_ipfs || config.upload.enabled;
        let resolver = Resolver::new(
            cache,
            gateways,
            FetchLimits {
                max_bytes: config.media.max_bytes.as_u64(),
                max_cached_bytes: config.cache.item_limit().as_u64(),
                range_fetch_threshold: config.media.range_fetch_threshold.as_u64(),
            },
            budget,
        );
        Ok(Self {
            homeserver,
            tokens,
            resolver,
            waits: ArcSwap::from_pointee(waits(config)),
            denylist,
            config: Mutex::new(config.clone()),
            legacy_unauthenticated: config.media.legacy_unauthenticated,
            routes: RouteConfig {
                alias_prefix: config.media.id_alias_prefix.clone(),
                thumbnails: thumbnails.is_some(),
                capabilities: advertise,
                uploads: uploader.is_some(),
            },
            advertisement: advertise.then(|| {
                // Only when it holds for every caller: the answer is not per user.
                let stores_uploads = config.upload.enabled && config.upload.users.is_empty();
                Advertisement::new(
                    config.capabilities.preferred_origin.as_deref(),
                    stores_uploads,
                )
            }),
            thumbnails,
            uploader,
        })
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn denylist(&self) -> &Denylists {
        &self.denylist
    }

    /// Applies what can change while running (see `reload`); the rest is reported. The
    /// denylist files are read again even when their paths did not change: SIGHUP is also how
    /// an admin says "read the lists now".
    pub fn reload(&self, new: &Config) -> Result<Changes, ReloadError> {
        let mut running = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::between(&running, new);
        // First what can fail as a whole, so that a failure leaves everything as it was.
        if running.gateways != new.gateways || running.retrieval != new.retrieval {
            self.resolver
                .gateways()
                .replace(&gateway_settings(new), &retrieval_settings(new))
                .map_err(ReloadError::Gateways)?;
        }
        self.waits.store(Arc::new(waits(new)));
        if let Some(uploader) = &self.uploader {
            uploader.forget_homeserver_limit();
        }
        let mut in_force = Changes::in_force(&running, new);
        match self
            .denylist
            .reload(&new.denylist.paths, new.denylist.watch_interval)
        {
            Ok(list) => {
                tracing::info!(rules = list.len(), "denylist reloaded");
                self.resolver.cache().remove_blocked(&list);
            }
            Err(error) => {
                tracing::error!(%error, "denylist cannot be used: keeping the previous lists");
                in_force.denylist = running.denylist.clone();
                // Not applied, so not reported as applied.
                changes.applied.retain(|key| *key != "denylist");
            }
        }
        *running = in_force;
        Ok(changes)
    }

    /// The admin listener's view of the app: readiness, and the cache gauges brought up to
    /// date before a scrape.
    pub fn admin(self: &Arc<Self>) -> crate::admin::Admin {
        let (ready, scrape) = (Arc::clone(self), Arc::clone(self));
        crate::admin::Admin {
            before_scrape: Arc::new(move || scrape.resolver.cache().report()),
            readiness: Arc::new(move || {
                let app = Arc::clone(&ready);
                Box::pin(async move { app.readiness().await })
            }),
        }
    }

    /// Ready to serve: the homeserver answers, and at least one gateway passes its probe.
    pub async fn readiness(&self) -> Result<(), String> {
        let probe = http::Request::get("/_matrix/client/versions")
            .body(body::empty())
            .expect("a static request");
        let loopback = Peer::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        if let Err(error) = self.homeserver.relay(probe, &loopback).await {
            return Err(format!("homeserver: {}", crate::chain::error_chain(&error)));
        }
        let gateways = self.resolver.gateways().current();
        let probes = gateways.all().iter().map(|g| g.probe());
        if !futures_util::future::join_all(probes).await.contains(&true) {
            return Err("no IPFS gateway answers its health probe".to_owned());
        }
        Ok(())
    }

    /// Every request: routed once, then answered by the handler its route names. Never fails:
    /// a failure becomes its Matrix JSON answer here. The response carries its route kind
    /// for the access log.
    pub async fn handle(self: Arc<Self>, request: Request<Body>, peer: Peer) -> Response<Body> {
        // (A `Uri` clone shares its bytes: no copy of the path for the error log.)
        let uri = request.uri().clone();
        let path = uri.path();
        let route = router::classify(request.method(), path, &self.routes);
        let kind = route.kind();
        // Every handler but the pass-through is boxed: this future is moved into a box for
        // each request, and its size is its largest handler's (the media one holds a whole
        // resolution), so unboxed they would be copied on every pass-through too.
        let result = match route {
            Route::Passthrough => self.pass_through(request, &peer).await,
            Route::Capabilities => Box::pin(self.capabilities(request, &peer)).await,
            Route::Preflight => Ok(preflight()),
            Route::Upload => Box::pin(self.upload(request, &peer)).await,
            Route::Pin(segment) => {
                let segment = segment.into_owned();
                Box::pin(self.pin(request, &peer, &segment)).await
            }
            Route::Media(media) => {
                let (parts, _body) = request.into_parts();
                Box::pin(self.media(&parts, media, &peer)).await
            }
        };
        let mut response = result.unwrap_or_else(|error| {
            let matrix = error.to_matrix();
            let error_chain = crate::chain::error_chain(&error);
            if matrix.status.is_server_error() {
                tracing::warn!(%path, error = %error_chain, "request failed");
            } else {
                tracing::debug!(%path, error = %error_chain, "request refused");
            }
            error.into_response()
        });
        response.extensions_mut().insert(kind);
        response
    }

    /// Everything that is not ours, to the homeserver untouched (a logout it confirms also
    /// forgets the token here).
    async fn pass_through(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, RequestError> {
        let watched = self.tokens.watch(&request);
        let response = self.homeserver.relay(request, peer).await?;
        self.tokens.observe(watched, response.status());
        Ok(response)
    }

    /// # POST `/_matrix/media/{r0,v1,v3}/upload` (with `upload.enabled`)
    ///
    /// A caller the homeserver accepts, in `upload.users`, has the bytes stored on IPFS;
    /// anyone else's upload goes to the homeserver as before.
    async fn upload(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, RequestError> {
        let (uploader, parts, body, user) = match self.storing_for(request, peer).await? {
            Storing::Yes(caller) => caller,
            Storing::Answered(response) => return Ok(response),
        };
        let result = uploader.upload(&parts, body, &user, peer).await;
        Ok(stored_or_refused(result, "upload"))
    }

    /// # POST `/_matrix/media/{v3,unstable/rs.chir.matrix.msc2706}/pin/{cid}` (with
    /// `upload.enabled`)
    ///
    /// MSC2706's pin: the same callers as uploads. Anyone outside `upload.users` goes to the
    /// homeserver, which answers as it does for an endpoint it does not know.
    async fn pin(
        &self,
        request: Request<Body>,
        peer: &Peer,
        segment: &str,
    ) -> Result<Response<Body>, RequestError> {
        let (uploader, parts, body, user) = match self.storing_for(request, peer).await? {
            Storing::Yes(caller) => caller,
            Storing::Answered(response) => return Ok(response),
        };
        let result = uploader.pin(&parts, body, &user, peer, segment).await;
        Ok(stored_or_refused(result, "pin"))
    }

    /// Uploads and pins: the caller's token checked, then whether the proxy stores for them
    /// (`upload.users`); anyone else's request goes to the homeserver as it came.
    async fn storing_for(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Storing<'_>, RequestError> {
        let uploader = self
            .uploader
            .as_ref()
            .expect("routed only when uploads are on");
        let (parts, body) = request.into_parts();
        let user = match self
            .tokens
            .check(&parts, peer)
            .await
            .map_err(RequestError::from)?
        {
            Verdict::Accepted { user, .. } => user,
            Verdict::Refused(response) => return Ok(Storing::Answered(response)),
        };
        if !uploader.stores_for(&user) {
            let response = self
                .pass_through(Request::from_parts(parts, body), peer)
                .await?;
            return Ok(Storing::Answered(response));
        }
        Ok(Storing::Yes((uploader, parts, body, user)))
    }

    /// # GET `/_matrix/client/{v3,r0}/capabilities` (with `capabilities.advertise_ipfs`)
    ///
    /// The homeserver's answer with `m.ipfs` added: the one response we edit.
    async fn capabilities(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, RequestError> {
        let response = self.pass_through(request, peer).await?;
        match &self.advertisement {
            Some(advertisement) => Ok(advertisement.edit(response).await?),
            None => Ok(response),
        }
    }

    /// # GET/HEAD `/_matrix/media/{r0,v1,v3}/{download,thumbnail}/{server}/ipfs_{cid}...`
    /// # GET/HEAD `/_matrix/client/v1/media/{download,thumbnail}/{server}/ipfs_{cid}...`
    /// # GET `/_matrix/federation/v1/media/{download,thumbnail}/ipfs_{cid}`
    ///
    /// (and the unstable MSC3916 aliases, and `ipfs:` for `ipfs_`): the caller is
    /// authorised, the CID checked against the denylist, then the answer its action names.
    async fn media(
        &self,
        request: &Parts,
        route: MediaRequest<'_>,
        peer: &Peer,
    ) -> Result<Response<Body>, RequestError> {
        if let Some(refused) = self.authorise(request, route.access, peer).await? {
            return Ok(refused);
        }
        let media = route.media?;
        // After authentication (a refused caller learns nothing about the list), before any
        // cache lookup or fetch (blocked content is never fetched, and a cached copy from
        // before the block is not served).
        if self.denylist.blocks(&media.cid) {
            tracing::warn!(cid = %media.cid, route = ?route.access, "refused: the CID is on a denylist");
            return Err(RequestError::Blocked);
        }
        let query = MediaQuery::parse(request.uri.query());
        let waits = **self.waits.load();
        let thumbnails = || {
            self.thumbnails
                .as_ref()
                .ok_or(RequestError::ThumbnailsDisabled)
        };
        match (route.access, route.action) {
            (Access::Federation, Action::Download) => {
                let wait = waits.requested(&query)?;
                let (content, outcome) = Content::get(&self.resolver, &media, wait).await?;
                let content_type = sniff::resolve(content.sniffed(), None);
                Ok(federation::respond(content, &content_type, outcome))
            }
            (Access::Federation, Action::Thumbnail) => {
                let wanted = thumbnail::requested(&query)?;
                let (item, outcome) = thumbnails()?
                    .get(&self.resolver, waits, &query, &media, wanted)
                    .await?;
                let content_type = item.sniffed.unwrap_or("application/octet-stream");
                Ok(federation::respond(
                    Content::Whole(item),
                    content_type,
                    outcome,
                ))
            }
            (_, Action::Thumbnail) => {
                thumbnail::respond(
                    thumbnails()?,
                    &self.resolver,
                    waits,
                    request,
                    &query,
                    &media,
                )
                .await
            }
            (_, Action::Download) => {
                let file_name = route.file_name.as_deref();
                download::download(&self.resolver, waits, request, &query, &media, file_name).await
            }
        }
    }

    /// `Some(answer)` when the homeserver refused the caller (its answer, unchanged).
    async fn authorise(
        &self,
        request: &Parts,
        access: Access,
        peer: &Peer,
    ) -> Result<Option<Response<Body>>, RequestError> {
        match access {
            Access::Legacy if !self.legacy_unauthenticated => Err(RequestError::LegacyDisabled),
            Access::Legacy => Ok(None),
            Access::Authenticated => match self.tokens.check(request, peer).await? {
                Verdict::Accepted { .. } => Ok(None),
                Verdict::Refused(response) => Ok(Some(response)),
            },
            Access::Federation => {
                match auth::check_federation(&self.homeserver, request, peer).await? {
                    FederationVerdict::Ours => Ok(None),
                    FederationVerdict::Homeserver(response) => Ok(Some(response)),
                }
            }
        }
    }
}

/// The upload side's settings, from the schema (only `enabled` configurations get here).
fn upload_settings(config: &Config) -> crate::upload::UploadSettings {
    use crate::config::{ImportProfile, MediaIdForm, StoreKind};
    use crate::upload::{rate::RateSettings, store, MediaIdForm as Form, UploadSettings};
    let u = &config.upload;
    let s = u.store.as_ref().expect("checked by the config");
    UploadSettings {
        allow_guests: u.allow_guests,
        users: u.users.clone(),
        media_id: match u.media_id_form {
            MediaIdForm::Alias => Form::Alias(config.media.id_alias_prefix.clone()),
            MediaIdForm::Msc2706 => Form::Msc2706,
        },
        profile: match u.profile {
            ImportProfile::UnixfsV1_2025 => crate::ipfs::import::Profile::UnixfsV1_2025,
            ImportProfile::KuboV1_256k => crate::ipfs::import::Profile::KuboV1_256k,
        },
        max_bytes: u.max_bytes.map(|b| b.as_u64()),
        fallback_max_bytes: crate::config::UploadConfig::FALLBACK_MAX_BYTES.as_u64(),
        rate: RateSettings {
            window: u.rate.window,
            requests: u.rate.requests,
            bytes: u.rate.bytes.as_u64(),
            max_users: u.rate.max_users,
        },
        cache_item_limit: config.cache.item_limit().as_u64(),
        store: store::StoreSettings {
            kind: match s.kind {
                StoreKind::Kubo => store::StoreKind::Kubo,
                StoreKind::Cluster => store::StoreKind::Cluster,
            },
            url: s.url.clone(),
            authorization: s.authorization.as_deref().map(|v| {
                let mut value = HeaderValue::from_str(v).expect("checked by the config");
                value.set_sensitive(true);
                value
            }),
            replication_min: s.replication_min,
            replication_max: s.replication_max,
            timeout: u.store_timeout,
        },
        pin_find_timeout: u.pin_find_timeout,
        pin_timeout: u.pin_timeout,
        spool_dir: u.spool_dir.clone(),
        max_dag_blocks: config.retrieval.max_dag_blocks,
        remote_pins: u
            .remote_pins
            .iter()
            .map(|r| crate::upload::remote::RemotePinSettings {
                name: r.name.clone(),
                endpoint: r.endpoint.clone(),
                token: {
                    let mut value = HeaderValue::from_str(&format!("Bearer {}", r.token))
                        .expect("checked by the config");
                    value.set_sensitive(true);
                    value
                },
                max_attempts: r.max_attempts,
                retry_backoff: r.retry_backoff,
                status_interval: r.status_interval,
                max_status_checks: r.max_status_checks,
                reconcile_interval: r.reconcile_interval,
                queue: r.queue,
                timeout: r.timeout,
            })
            .collect(),
    }
}

fn thumbnailer(config: &Config, cache: MediaCache, budget: Arc<MemoryBudget>) -> Thumbnailer {
    let t = &config.thumbnails;
    let sizes = t
        .sizes
        .iter()
        .map(|s| {
            let method = match s.method {
                ThumbnailMethod::Crop => ThumbnailMethodKind::Crop,
                ThumbnailMethod::Scale => ThumbnailMethodKind::Scale,
            };
            ThumbnailSize::new(s.width, s.height, method)
        })
        .collect();
    let limits = ThumbnailLimits {
        max_pixels: t.max_pixels,
        max_source_bytes: usize::try_from(t.max_source_bytes.as_u64()).unwrap_or(usize::MAX),
        max_decoded_bytes: t.max_decoded_bytes.as_u64(),
        max_jpeg_scans: t.max_jpeg_scans,
        ..ThumbnailLimits::default()
    };
    let concurrency = match t.max_concurrent {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let bounds = thumbnail::RenderBounds {
        concurrency,
        all_sizes: t.all_sizes,
        max_queued: t.max_queued,
        render_timeout: t.render_timeout,
    };
    Thumbnailer::new(cache, sizes, t.dynamic, limits, bounds, budget)
}

/// Who an upload or pin is for: a caller the proxy stores for, or the answer already given.
enum Storing<'a> {
    Yes((&'a Uploader, Parts, Body, Whoami)),
    Answered(Response<Body>),
}

/// An upload's or pin's answer; a failure logged (a warning when it is ours or the store's,
/// `info` when the request was refused) and answered as Matrix JSON, with its record for the
/// access log either way.
fn stored_or_refused(
    result: Result<Response<Body>, (UploadError, UploadRecord)>,
    what: &'static str,
) -> Response<Body> {
    let (error, record) = match result {
        Ok(response) => return response,
        Err(failed) => failed,
    };
    let error = RequestError::from(error);
    let cid = record.cid.as_deref().unwrap_or("-");
    if error.to_matrix().status.is_server_error() {
        tracing::warn!(%error, cid, "{what} failed");
    } else {
        tracing::info!(%error, cid, "{what} refused");
    }
    let mut response = error.into_response();
    response.extensions_mut().insert(record);
    response
}

/// CORS preflight for our media routes, as Synapse answers it.
fn preflight() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    headers::cors(response.headers_mut());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}
