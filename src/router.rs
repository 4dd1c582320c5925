//! Which requests are ours. A pure function of the raw path, so it is tested without a network.
//!
//! | path                                                                       | access        |
//! |----------------------------------------------------------------------------|---------------|
//! | `/_matrix/media/{r0,v1,v3}/download/{server}/{mediaId}[/{fileName}]`        | legacy        |
//! | `/_matrix/media/{r0,v1,v3}/thumbnail/{server}/{mediaId}`                    | legacy        |
//! | `/_matrix/client/v1/media/download/{server}/{mediaId}[/{fileName}]`        | authenticated |
//! | `/_matrix/client/v1/media/thumbnail/{server}/{mediaId}`                    | authenticated |
//! | `/_matrix/client/unstable/org.matrix.msc3916/media/{download,thumbnail}/...` | authenticated |
//! | `/_matrix/federation/v1/media/{download,thumbnail}/{mediaId}`               | federation    |
//! | `/_matrix/federation/unstable/org.matrix.msc3916.v2/media/...`             | federation    |
//!
//! plus `GET /_matrix/client/{v3,r0}/capabilities`, ours to edit when advertising IPFS, and
//! `POST /_matrix/media/{r0,v1,v3}/upload`, ours when uploads are stored on IPFS, and
//! `POST /_matrix/media/{v3,unstable/rs.chir.matrix.msc2706}/pin/{cid}` (MSC2706) with them.
//!
//! [`classify`] decides what a request is, once: a media route of an ipfs media ID with an
//! allowed method is ours ([`Route::Media`], or [`Route::Preflight`] for `OPTIONS`);
//! everything else goes to the homeserver. Segments are percent-decoded one by one, so `%2F`
//! never splits a segment and `ipfs%3A` equals `ipfs:`.

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::media::media_id::{self, IpfsMedia, MediaIdError};

/// What routing needs of the configuration.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `media.id_alias_prefix` (`""`: no alias).
    pub alias_prefix: String,
    /// With thumbnails off, thumbnail requests go to the homeserver, which answers as it does
    /// for media it cannot thumbnail.
    pub thumbnails: bool,
    /// `capabilities.advertise_ipfs`.
    pub capabilities: bool,
    /// `upload.enabled`: `POST /_matrix/media/{r0,v1,v3}/upload` is ours.
    pub uploads: bool,
}

/// What a request is.
// Lives on the stack for one request: boxing the media variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Not ours: to the homeserver, untouched.
    Passthrough,
    /// To the homeserver, and its answer gains the IPFS capability.
    Capabilities,
    /// CORS preflight of an ipfs media route.
    Preflight,
    /// GET/HEAD of ipfs media (federation: GET only).
    Media(MediaRequest<'a>),
    /// `POST /_matrix/media/{r0,v1,v3}/upload`, with uploads on.
    Upload,
    /// `POST /_matrix/media/v3/pin/{cid}` (MSC2706, and its unstable prefix), with uploads
    /// on: the path's last segment, percent-decoded, not yet parsed as a CID.
    Pin(Cow<'a, str>),
}

/// An ipfs media request. `media` is an error when the ID claims to be ipfs but the CID is
/// bad (a 404 once the caller is authorised).
#[derive(Debug, PartialEq, Eq)]
pub struct MediaRequest<'a> {
    pub access: Access,
    pub action: Action,
    pub media: Result<IpfsMedia, MediaIdError>,
    pub file_name: Option<Cow<'a, str>>,
}

/// A route's name in logs and metrics (`route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Passthrough,
    Download,
    Thumbnail,
    Federation,
    Preflight,
    Upload,
    Pin,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Passthrough => "passthrough",
            RouteKind::Download => "download",
            RouteKind::Thumbnail => "thumbnail",
            RouteKind::Federation => "federation",
            RouteKind::Preflight => "preflight",
            RouteKind::Upload => "upload",
            RouteKind::Pin => "pin",
        }
    }
}

impl Route<'_> {
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Passthrough | Route::Capabilities => RouteKind::Passthrough,
            Route::Preflight => RouteKind::Preflight,
            Route::Upload => RouteKind::Upload,
            Route::Pin(_) => RouteKind::Pin,
            Route::Media(m) if m.access == Access::Federation => RouteKind::Federation,
            Route::Media(m) if m.action == Action::Thumbnail => RouteKind::Thumbnail,
            Route::Media(_) => RouteKind::Download,
        }
    }
}

const UPLOAD_PATHS: [&str; 3] = [
    "/_matrix/media/r0/upload",
    "/_matrix/media/v1/upload",
    "/_matrix/media/v3/upload",
];

const PIN_PREFIXES: [&str; 2] = [
    "/_matrix/media/v3/pin/",
    "/_matrix/media/unstable/rs.chir.matrix.msc2706/pin/",
];

const CAPABILITIES_PATHS: [&str; 2] = [
    "/_matrix/client/v3/capabilities",
    "/_matrix/client/r0/capabilities",
];

/// What the request with this method and raw (still percent-encoded) path is.
pub fn classify<'a>(method: &Method, raw_path: &'a str, config: &RouteConfig) -> Route<'a> {
    if config.capabilities && *method == Method::GET && CAPABILITIES_PATHS.contains(&raw_path) {
        return Route::Capabilities;
    }
    // Only the one-shot upload: an async upload's `PUT .../upload/{server}/{mediaId}` names a
    // media ID chosen before any byte existed, which cannot be a CID.
    if config.uploads && *method == Method::POST && UPLOAD_PATHS.contains(&raw_path) {
        return Route::Upload;
    }
    if config.uploads {
        let segment = PIN_PREFIXES
            .iter()
            .find_map(|p| raw_path.strip_prefix(p))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'));
        if let Some(segment) = segment {
            match *method {
                // Not UTF-8 once decoded: left as sent, to be refused as not a CID.
                Method::POST => {
                    return Route::Pin(decode(segment).unwrap_or(Cow::Borrowed(segment)))
                }
                Method::OPTIONS => return Route::Preflight,
                _ => {}
            }
        }
    }
    let Some(path) = media_path(raw_path) else {
        return Route::Passthrough;
    };
    let allowed = match path.access {
        Access::Federation => *method == Method::GET,
        _ => matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
    };
    if !allowed || (path.action == Action::Thumbnail && !config.thumbnails) {
        return Route::Passthrough;
    }
    let Some(media) = media_id::parse(&path.media_id, &config.alias_prefix) else {
        return Route::Passthrough;
    };
    if *method == Method::OPTIONS {
        return Route::Preflight;
    }
    Route::Media(MediaRequest {
        access: path.access,
        action: path.action,
        media,
        file_name: path.file_name,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/media/*`: no token.
    Legacy,
    /// `/_matrix/client/v1/media/*` (MSC3916): the homeserver must accept the caller's token.
    Authenticated,
    /// `/_matrix/federation/v1/media/*`: the homeserver must accept the X-Matrix signature.
    Federation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Download,
    Thumbnail,
}

/// The shape of a media path, before the media ID is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaPath<'a> {
    pub(crate) access: Access,
    pub(crate) action: Action,
    /// Absent on federation routes: the media is the destination's own.
    pub(crate) server_name: Option<Cow<'a, str>>,
    pub(crate) media_id: Cow<'a, str>,
    pub(crate) file_name: Option<Cow<'a, str>>,
}

const LEGACY_PREFIXES: &[&str] = &[
    "/_matrix/media/r0/",
    "/_matrix/media/v1/",
    "/_matrix/media/v3/",
];
const AUTHENTICATED_PREFIXES: &[&str] = &[
    "/_matrix/client/v1/media/",
    "/_matrix/client/unstable/org.matrix.msc3916/media/",
];
const FEDERATION_PREFIXES: &[&str] = &[
    "/_matrix/federation/v1/media/",
    "/_matrix/federation/unstable/org.matrix.msc3916.v2/media/",
];

/// The media route a raw (still percent-encoded) path names, if any.
pub(crate) fn media_path(raw_path: &str) -> Option<MediaPath<'_>> {
    let find = |prefixes: &[&str], access| {
        prefixes
            .iter()
            .find_map(|p| raw_path.strip_prefix(p).map(|rest| (access, rest)))
    };
    let (access, rest) = find(LEGACY_PREFIXES, Access::Legacy)
        .or_else(|| find(AUTHENTICATED_PREFIXES, Access::Authenticated))
        .or_else(|| find(FEDERATION_PREFIXES, Access::Federation))?;
    let mut segments = rest.split('/');
    let action = match segments.next()? {
        "download" => Action::Download,
        "thumbnail" => Action::Thumbnail,
        _ => return None,
    };
    let server_name = match access {
        Access::Federation => None,
        _ => Some(decode(segments.next()?).filter(|s| !s.is_empty())?),
    };
    let media_id = decode(segments.next()?)?;
    // Only client downloads carry a file name.
    let file_name = match (access, action, segments.next()) {
        (Access::Legacy | Access::Authenticated, Action::Download, Some(segment)) => {
            Some(decode(segment)?)
        }
        (_, _, Some(_)) => return None,
        (_, _, None) => None,
    };
    if segments.next().is_some() || media_id.is_empty() {
        return None;
    }
    Some(MediaPath {
        access,
        action,
        server_name,
        media_id,
        // `.../mediaId/` names no file.
        file_name: file_name.filter(|n| !n.is_empty()),
    })
}

/// Percent-decodes one segment; segments that are not UTF-8 are not ours. A segment without
/// `%` is already what it decodes to (most media IDs): no byte-by-byte decoding pass for it.
fn decode(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    percent_decode_str(segment).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_routes_only_with_uploads() {
        let mut config = RouteConfig {
            alias_prefix: "ipfs_".into(),
            thumbnails: true,
            capabilities: false,
            uploads: true,
        };
        for prefix in [
            "/_matrix/media/v3/pin/",
            "/_matrix/media/unstable/rs.chir.matrix.msc2706/pin/",
        ] {
            let path = format!("{prefix}bafk%72eia");
            assert_eq!(
                classify(&Method::POST, &path, &config),
                Route::Pin(Cow::Borrowed("bafkreia"))
            );
            assert_eq!(classify(&Method::OPTIONS, &path, &config), Route::Preflight);
            assert_eq!(classify(&Method::GET, &path, &config), Route::Passthrough);
            assert_eq!(
                classify(&Method::POST, &format!("{prefix}a/b"), &config),
                Route::Passthrough
            );
            assert_eq!(classify(&Method::POST, prefix, &config), Route::Passthrough);
        }
        config.uploads = false;
        assert_eq!(
            classify(&Method::POST, "/_matrix/media/v3/pin/bafkreia", &config),
            Route::Passthrough
        );
    }

    #[test]
    fn every_download_form() {
        for prefix in [
            "/_matrix/media/r0",
            "/_matrix/media/v1",
            "/_matrix/media/v3",
            "/_matrix/client/v1/media",
            "/_matrix/client/unstable/org.matrix.msc3916/media",
        ] {
            let p = format!("{prefix}/download/example.org/ipfs%3Abafkqaaa/cat%20pic.png");
            let m = media_path(&p).unwrap();
            assert_eq!(m.action, Action::Download);
            assert_eq!(m.server_name.as_deref(), Some("example.org"));
            assert_eq!(m.media_id, "ipfs:bafkqaaa");
            assert_eq!(m.file_name.as_deref(), Some("cat pic.png"));
            let expected = if prefix.contains("client") {
                Access::Authenticated
            } else {
                Access::Legacy
            };
            assert_eq!(m.access, expected, "{prefix}");
        }
    }

    #[test]
    fn thumbnails_and_federation() {
        let m = media_path("/_matrix/media/v3/thumbnail/s/ipfs:x").unwrap();
        assert_eq!((m.access, m.action), (Access::Legacy, Action::Thumbnail));
        let m = media_path("/_matrix/client/v1/media/thumbnail/s/ipfs_x").unwrap();
        assert_eq!(
            (m.access, m.action),
            (Access::Authenticated, Action::Thumbnail)
        );
        assert_eq!(
            media_path("/_matrix/media/v3/thumbnail/s/ipfs:x/name.png"),
            None
        );
        for prefix in [
            "/_matrix/federation/v1/media",
            "/_matrix/federation/unstable/org.matrix.msc3916.v2/media",
        ] {
            let download = format!("{prefix}/download/ipfs%3Ax");
            let m = media_path(&download).unwrap();
            assert_eq!((m.access, m.action), (Access::Federation, Action::Download));
            assert_eq!(m.server_name, None);
            assert_eq!(m.media_id, "ipfs:x");
            let thumbnail = format!("{prefix}/thumbnail/ipfs:x");
            let m = media_path(&thumbnail).unwrap();
            assert_eq!(m.action, Action::Thumbnail);
            assert_eq!(media_path(&format!("{prefix}/download/ipfs:x/name")), None);
        }
    }

    #[test]
    fn raw_colon_and_no_file_name() {
        let m = media_path("/_matrix/media/v3/download/any.server/ipfs:bafkqaaa").unwrap();
        assert_eq!(m.media_id, "ipfs:bafkqaaa");
        assert_eq!(m.file_name, None);
        let m = media_path("/_matrix/media/v3/download/any.server/ipfs:bafkqaaa/").unwrap();
        assert_eq!(m.file_name, None);
    }

    #[test]
    fn encoded_slash_stays_in_its_segment() {
        let m = media_path("/_matrix/media/v3/download/s/ipfs:x/a%2Fb.txt").unwrap();
        assert_eq!(m.file_name.as_deref(), Some("a/b.txt"));
    }

    #[test]
    fn other_paths_are_not_media() {
        for p in [
            "/_matrix/client/v3/sync",
            "/_matrix/media/v3/upload",
            "/_matrix/media/v3/config",
            "/_matrix/media/v3/download/s",
            "/_matrix/media/v3/download//ipfs:x",
            "/_matrix/media/v3/download/s/ipfs:x/f/extra",
            "/_matrix/media/v2/download/s/ipfs:x",
            "/_matrix/federation/v1/media/download/",
            "/_matrix/federation/v2/media/download/ipfs:x",
            "/_matrix/media/v3/download/s/%FF%FE",
        ] {
            assert_eq!(media_path(p), None, "{p}");
        }
    }

    fn config() -> RouteConfig {
        RouteConfig {
            alias_prefix: "ipfs_".into(),
            thumbnails: true,
            capabilities: true,
            uploads: true,
        }
    }

    #[test]
    fn uploads_are_ours_only_when_on_and_only_the_one_shot_post() {
        let on = config();
        let off = RouteConfig {
            uploads: false,
            ..config()
        };
        for version in ["r0", "v1", "v3"] {
            let path = format!("/_matrix/media/{version}/upload");
            assert_eq!(classify(&Method::POST, &path, &on), Route::Upload);
            assert_eq!(
                classify(&Method::POST, &path, &on).kind().as_str(),
                "upload"
            );
            assert_eq!(classify(&Method::POST, &path, &off), Route::Passthrough);
            assert_eq!(classify(&Method::PUT, &path, &on), Route::Passthrough);
            assert_eq!(classify(&Method::GET, &path, &on), Route::Passthrough);
        }
        for other in [
            "/_matrix/media/v3/upload/example.org/abcdef",
            "/_matrix/media/v1/create",
            "/_matrix/client/v1/media/upload",
            "/_matrix/media/v3/upload/",
        ] {
            assert_eq!(classify(&Method::POST, other, &on), Route::Passthrough);
            assert_eq!(classify(&Method::PUT, other, &on), Route::Passthrough);
        }
    }

    #[test]
    fn methods_decide_what_is_ours() {
        let c = config();
        let download = "/_matrix/client/v1/media/download/s/ipfs_bafkqaaa";
        assert_eq!(
            classify(&Method::GET, download, &c).kind(),
            RouteKind::Download
        );
        assert_eq!(
            classify(&Method::HEAD, download, &c).kind(),
            RouteKind::Download
        );
        assert_eq!(classify(&Method::OPTIONS, download, &c), Route::Preflight);
        assert_eq!(classify(&Method::POST, download, &c), Route::Passthrough);
        let federation = "/_matrix/federation/v1/media/download/ipfs:bafkqaaa";
        assert_eq!(
            classify(&Method::GET, federation, &c).kind(),
            RouteKind::Federation
        );
        assert_eq!(classify(&Method::HEAD, federation, &c), Route::Passthrough);
        assert_eq!(
            classify(&Method::OPTIONS, federation, &c),
            Route::Passthrough
        );
    }

    #[test]
    fn only_ipfs_ids_are_ours_and_bad_cids_are_still_ours() {
        let c = config();
        let synapse = "/_matrix/media/v3/download/s/abcdefghijklmnopqrstuvwx";
        assert_eq!(classify(&Method::GET, synapse, &c), Route::Passthrough);
        let bad = "/_matrix/media/v3/download/s/ipfs:notacid";
        match classify(&Method::GET, bad, &c) {
            Route::Media(m) => assert!(m.media.is_err()),
            other => panic!("{other:?}"),
        }
        let no_alias = RouteConfig {
            alias_prefix: String::new(),
            ..c
        };
        let alias = "/_matrix/media/v3/download/s/ipfs_bafkqaaa";
        assert_eq!(classify(&Method::GET, alias, &no_alias), Route::Passthrough);
    }

    #[test]
    fn thumbnails_and_capabilities_follow_the_config() {
        let on = config();
        let off = RouteConfig {
            thumbnails: false,
            capabilities: false,
            ..config()
        };
        let thumb = "/_matrix/media/v3/thumbnail/s/ipfs_bafkqaaa";
        assert_eq!(
            classify(&Method::GET, thumb, &on).kind(),
            RouteKind::Thumbnail
        );
        assert_eq!(classify(&Method::GET, thumb, &off), Route::Passthrough);
        for path in CAPABILITIES_PATHS {
            assert_eq!(classify(&Method::GET, path, &on), Route::Capabilities);
            assert_eq!(classify(&Method::GET, path, &off), Route::Passthrough);
            assert_eq!(classify(&Method::POST, path, &on), Route::Passthrough);
            let below = format!("{path}/x");
            assert_eq!(classify(&Method::GET, &below, &on), Route::Passthrough);
        }
    }
}
