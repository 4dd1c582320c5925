//! The request handler: route -> (authorise) -> resolve -> respond, or pass through.
//!
//! `handle` never fails: every error becomes a Matrix JSON response here, in one place, and
//! every request is logged once (see `access_log`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::access_log::{InFlight, Logged, RequestLog, RouteKind};
use crate::auth::{self, FederationVerdict, TokenChecker, Verdict};
use crate::body::{self, Body};
use crate::cache::MediaCache;
use crate::capabilities::Advertisement;
use crate::config::{Config, ThumbnailMethod};
use crate::denylist::Denylists;
use crate::error::MatrixError;
use crate::forwarding::Peer;
use crate::homeserver::Homeserver;
use crate::ipfs::pool::Gateways;
use crate::media::content::Content;
use crate::media::content::{CacheOutcome, Waits};
use crate::media::headers;
use crate::media::media_id::{self, IpfsMedia, MediaIdError};
use crate::media::thumbnail::{
    Limits as ThumbnailLimits, Method as ThumbnailMethodKind, ThumbnailSize,
};
use crate::media::thumbnail_answer::{self, Thumbnailer};
use crate::media::{download, federation, sniff};
use crate::reload::Changes;
use crate::resolve::{Limits, Resolver};
use crate::router::{self, Access, Action};
use crate::server::StartError;

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
    alias_prefix: String,
    advertisement: Option<Advertisement>,
    thumbnails: Option<Thumbnailer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot build the gateway clients: {0}")]
    Gateways(reqwest::Error),
}

fn waits(config: &Config) -> Waits {
    Waits {
        default: config.media.default_timeout,
        max: config.media.max_timeout,
    }
}

/// An ipfs media request, owned so the request itself can move on.
struct IpfsRequest {
    access: Access,
    action: Action,
    media: Result<IpfsMedia, MediaIdError>,
    file_name: Option<String>,
}

impl App {
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let homeserver = Homeserver::new(&config.homeserver);
        let tokens = TokenChecker::new(
            homeserver.clone(),
            config.auth.token_cache_ttl,
            config.auth.token_cache_entries,
        );
        let gateways = Arc::new(Gateways::new(&config.gateways, &config.retrieval)?);
        gateways.spawn_probes();
        let cache = MediaCache::new(config.cache.max_bytes.as_u64());
        let denylist = Arc::new(Denylists::load(
            &config.denylist.paths,
            config.denylist.watch_interval,
        )?);
        let purge = cache.clone();
        denylist.spawn_watch(move |list| purge.remove_blocked(list));
        let thumbnails = config
            .thumbnails
            .enabled
            .then(|| thumbnailer(config, cache.clone()));
        let resolver = Resolver::new(
            cache,
            gateways,
            Limits {
                max_bytes: config.media.max_bytes.as_u64(),
                max_cached_bytes: config.cache.max_item_bytes.as_u64(),
                range_fetch_threshold: config.media.range_fetch_threshold.as_u64(),
            },
        );
        Ok(Self {
            homeserver,
            tokens,
            resolver,
            waits: ArcSwap::from_pointee(waits(config)),
            denylist,
            config: Mutex::new(config.clone()),
            legacy_unauthenticated: config.media.legacy_unauthenticated,
            alias_prefix: config.media.id_alias_prefix.clone(),
            advertisement: config
                .capabilities
                .advertise_ipfs
                .then(|| Advertisement::new(config.capabilities.preferred_origin.as_deref())),
            thumbnails,
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
                .replace(&new.gateways, &new.retrieval)
                .map_err(ReloadError::Gateways)?;
        }
        self.waits.store(Arc::new(waits(new)));
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

    /// Ready to serve: the homeserver answers, and at least one gateway passes its probe.
    pub async fn readiness(&self) -> Result<(), String> {
        let probe = http::Request::get("/_matrix/client/versions")
            .body(body::empty())
            .expect("a static request");
        let loopback = Peer::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        if let Err(error) = self.homeserver.forward(probe, &loopback).await {
            return Err(format!("homeserver: {}", error.message));
        }
        let gateways = self.resolver.gateways().current();
        let probes = gateways.all().iter().map(|g| g.probe());
        if !futures_util::future::join_all(probes).await.contains(&true) {
            return Err("no IPFS gateway answers its health probe".to_owned());
        }
        Ok(())
    }

    pub async fn handle(self: Arc<Self>, request: Request<Body>, peer: Peer) -> Response<Body> {
        let started = Instant::now();
        let in_flight = InFlight::enter();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (route, result) =
            match ipfs_request(&request, &self.alias_prefix, self.thumbnails.is_some()) {
                Some(ipfs) => {
                    let (parts, _body) = request.into_parts();
                    let route = match (parts.method == Method::OPTIONS, ipfs.access) {
                        (true, _) => RouteKind::Preflight,
                        (false, Access::Federation) => RouteKind::Federation,
                        (false, _) if ipfs.action == Action::Thumbnail => RouteKind::Thumbnail,
                        (false, _) => RouteKind::Download,
                    };
                    (route, self.serve_ipfs(&parts, ipfs, &peer).await)
                }
                None => (
                    RouteKind::Passthrough,
                    self.pass_through(request, &peer).await,
                ),
            };
        let response = result.unwrap_or_else(|error| {
            if error.status.is_server_error() {
                tracing::warn!(%path, %error, "request failed");
            } else {
                tracing::debug!(%path, %error, "request refused");
            }
            error.into_response()
        });
        let outcome = response.extensions().get::<CacheOutcome>().copied();
        if let Some(outcome) = outcome {
            outcome.count();
        }
        let cache = outcome.map(|c| c.as_str());
        let status = response.status();
        let announced = if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Some(0)
        } else {
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let log = RequestLog {
            method,
            path,
            route,
            cache,
            status,
            announced,
            started,
            in_flight,
        };
        response.map(|body| Logged::new(body, log).boxed())
    }

    /// Everything that is not ours; the capabilities answer is the one we may edit.
    async fn pass_through(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, MatrixError> {
        let advertise = self
            .advertisement
            .as_ref()
            .filter(|_| Advertisement::applies_to(request.method(), request.uri().path()));
        let watched = self.tokens.watch(&request);
        let response = self.homeserver.forward(request, peer).await?;
        self.tokens.observe(watched, response.status());
        match advertise {
            Some(advertisement) => advertisement.edit(response).await,
            None => Ok(response),
        }
    }

    async fn serve_ipfs(
        &self,
        request: &Parts,
        ipfs: IpfsRequest,
        peer: &Peer,
    ) -> Result<Response<Body>, MatrixError> {
        if request.method == Method::OPTIONS {
            return Ok(preflight());
        }
        match ipfs.access {
            Access::Legacy if !self.legacy_unauthenticated => {
                return Err(MatrixError::not_found(
                    "unauthenticated media downloads are disabled on this server",
                ));
            }
            Access::Legacy => {}
            Access::Authenticated => match self.tokens.check(request, peer).await? {
                Verdict::Accepted { .. } => {}
                Verdict::Refused(response) => return Ok(response),
            },
            Access::Federation => {
                match auth::check_federation(&self.homeserver, request, peer).await? {
                    FederationVerdict::Ours => {}
                    FederationVerdict::Homeserver(response) => return Ok(response),
                }
            }
        }
        let media = ipfs
            .media
            .map_err(|e| MatrixError::not_found(e.to_string()))?;
        // After authentication (a refused caller learns nothing about the list), before any
        // cache lookup or fetch (blocked content is never fetched, and a cached copy from
        // before the block is not served).
        if self.denylist.blocks(&media.cid) {
            tracing::warn!(cid = %media.cid, route = ?ipfs.access, "refused: the CID is on a denylist");
            return Err(MatrixError::not_found(
                "this media is blocked on this server",
            ));
        }
        let waits = **self.waits.load();
        match (ipfs.access, ipfs.action, &self.thumbnails) {
            (Access::Federation, Action::Download, _) => {
                let wait = waits.requested(request.uri.query())?;
                let (content, outcome) = Content::get(&self.resolver, &media, wait).await?;
                let content_type = sniff::resolve(content.sniffed(), None);
                let mut response =
                    federation::respond(content, &content_type, &federation::boundary());
                response.extensions_mut().insert(outcome);
                return Ok(response);
            }
            (Access::Federation, Action::Thumbnail, Some(thumbnails)) => {
                let wanted = thumbnail_answer::requested(request)?;
                let (item, outcome) = thumbnails
                    .get(&self.resolver, waits, request, &media, wanted)
                    .await?;
                let content_type = item.sniffed.unwrap_or("application/octet-stream");
                let mut response = federation::respond(
                    Content::Whole(item),
                    content_type,
                    &federation::boundary(),
                );
                response.extensions_mut().insert(outcome);
                return Ok(response);
            }
            (_, Action::Thumbnail, Some(thumbnails)) => {
                return thumbnail_answer::respond(
                    thumbnails,
                    &self.resolver,
                    waits,
                    request,
                    &media,
                )
                .await;
            }
            // Routing sends thumbnails here only when they are enabled.
            (_, Action::Thumbnail, None) => {
                return Err(MatrixError::not_found("thumbnails are disabled"));
            }
            (_, Action::Download, _) => {}
        }
        download::download(
            &self.resolver,
            waits,
            request,
            &media,
            ipfs.file_name.as_deref(),
        )
        .await
    }
}

/// Our request when it is a GET/HEAD/OPTIONS of an ipfs media ID on a media route (federation:
/// GET only). With thumbnails turned off, thumbnail requests go to the homeserver, which
/// answers as it does for media it cannot thumbnail.
fn ipfs_request<B>(
    request: &Request<B>,
    alias_prefix: &str,
    thumbnails_enabled: bool,
) -> Option<IpfsRequest> {
    let method = request.method();
    let path = router::classify(request.uri().path())?;
    let allowed = match path.access {
        Access::Federation => *method == Method::GET,
        _ => matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
    };
    if !allowed || (path.action == Action::Thumbnail && !thumbnails_enabled) {
        return None;
    }
    let media = media_id::parse(&path.media_id, alias_prefix)?;
    Some(IpfsRequest {
        access: path.access,
        action: path.action,
        media,
        file_name: path.file_name.map(|f| f.into_owned()),
    })
}

fn thumbnailer(config: &Config, cache: MediaCache) -> Thumbnailer {
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
        ..ThumbnailLimits::default()
    };
    let concurrency = match t.max_concurrent {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    Thumbnailer::new(cache, sizes, t.dynamic, limits, concurrency)
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
