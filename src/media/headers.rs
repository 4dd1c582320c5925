//! The headers a homeserver's media repository puts on media, and the rules behind
//! `Content-Type` and `Content-Disposition` (spec "Serving inline content", MSC2702, and
//! Synapse's `add_file_headers`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub const NO_STORE: HeaderValue = HeaderValue::from_static("no-cache, no-store, must-revalidate");
/// Content-addressed bytes never change.
pub const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

const CSP: HeaderValue = HeaderValue::from_static(
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
);

/// Synapse's CORS headers, on media and errors alike.
pub fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Date"),
    );
}

/// The security headers Synapse puts on every media download, plus `nosniff`: a browser must
/// never reinterpret media as a page.
pub fn media_security(headers: &mut HeaderMap) {
    cors(headers);
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP);
    for (name, value) in [
        (
            HeaderName::from_static("x-content-security-policy"),
            HeaderValue::from_static("sandbox;"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ),
        (
            HeaderName::from_static("x-robots-tag"),
            HeaderValue::from_static("noindex, nofollow, noarchive, noimageindex"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ] {
        headers.insert(name, value);
    }
}

/// What a media answer (download, thumbnail) says about the item it carries: the one
/// place its headers are put together.
pub struct MediaHeaders<'a> {
    pub content_type: &'a str,
    pub file_name: Option<&'a str>,
    /// Thumbnails are always `inline`; downloads only for the safe types.
    pub force_inline: bool,
    pub etag: &'a HeaderValue,
    /// Downloads take ranges; thumbnails do not.
    pub ranges: bool,
}

impl MediaHeaders<'_> {
    pub fn apply(&self, headers: &mut HeaderMap) {
        media_security(headers);
        headers.insert(header::CONTENT_TYPE, content_type_value(self.content_type));
        headers.insert(
            header::CONTENT_DISPOSITION,
            content_disposition(self.content_type, self.file_name, self.force_inline),
        );
        headers.insert(header::CACHE_CONTROL, IMMUTABLE);
        headers.insert(header::ETAG, self.etag.clone());
        if self.ranges {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
    }
}

/// The headers of a 304: the validator and how long it holds, and CORS so that a browser
/// may read it.
pub fn not_modified(headers: &mut HeaderMap, etag: HeaderValue) {
    cors(headers);
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, IMMUTABLE);
}

/// Types a browser may render inline (spec "Serving inline content"; Synapse's
/// `INLINE_CONTENT_TYPES`). Everything else, SVG and HTML above all, is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    INLINE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(essence))
}

/// `Content-Type` as sent: text types say their charset, as Synapse's do.
pub fn content_type_value(content_type: &str) -> HeaderValue {
    let value = if content_type.starts_with("text/") && !content_type.contains("charset") {
        format!("{content_type}; charset=UTF-8")
    } else {
        content_type.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `inline`/`attachment` with the file name encoded as Synapse does: a bare token when every
/// character may stand in one (RFC 6266), else RFC 5987 `filename*=utf-8''...`.
pub fn content_disposition(
    content_type: &str,
    file_name: Option<&str>,
    force_inline: bool,
) -> HeaderValue {
    let disposition = if force_inline || is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let value = match file_name.filter(|n| !n.is_empty()) {
        None => disposition.to_owned(),
        Some(name) if is_token(name) => format!("{disposition}; filename={name}"),
        Some(name) => format!(
            "{disposition}; filename*=utf-8''{}",
            utf8_percent_encode(name, RFC5987_ENCODE)
        ),
    };
    // Both forms are printable ASCII by construction.
    HeaderValue::from_str(&value).expect("content disposition is ASCII")
}

/// Everything but unreserved characters is escaped (Python's `quote(safe="")`, as Synapse).
const RFC5987_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn is_token(name: &str) -> bool {
    name.bytes()
        .all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `"<cid>"`: the strong validator of content that can never change.
pub fn etag_for(canonical_cid: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{canonical_cid}\"")).expect("a CID string is ASCII")
}

/// RFC 9110 §13.1.2 weak comparison of `If-None-Match` against our one ETag.
pub fn if_none_match_hits(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|candidate| {
            let candidate = candidate.trim_ascii();
            candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == ours
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_only_for_safe_types() {
        assert!(is_inline("image/png"));
        assert!(is_inline("text/plain; charset=UTF-8"));
        assert!(is_inline("IMAGE/JPEG"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("application/octet-stream"));
    }

    #[test]
    fn disposition_forms() {
        assert_eq!(content_disposition("image/png", None, false), "inline");
        assert_eq!(content_disposition("text/html", None, false), "attachment");
        assert_eq!(
            content_disposition("image/png", Some("cat.png"), false),
            "inline; filename=cat.png"
        );
        assert_eq!(
            content_disposition("image/svg+xml", Some("a b.svg"), false),
            "attachment; filename*=utf-8''a%20b.svg"
        );
        assert_eq!(
            content_disposition("text/plain", Some("naïve.txt"), false),
            "inline; filename*=utf-8''na%C3%AFve.txt"
        );
        assert_eq!(
            content_disposition("text/html", Some("x.html"), true),
            "inline; filename=x.html"
        );
    }

    #[test]
    fn text_types_get_charset() {
        assert_eq!(
            content_type_value("text/plain"),
            "text/plain; charset=UTF-8"
        );
        assert_eq!(
            content_type_value("text/plain; charset=latin1"),
            "text/plain; charset=latin1"
        );
        assert_eq!(content_type_value("image/png"), "image/png");
    }

    #[test]
    fn if_none_match_forms() {
        let etag = etag_for("bafkqaaa");
        let mut h = HeaderMap::new();
        assert!(!if_none_match_hits(&h, &etag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"other\", W/\"bafkqaaa\""),
        );
        assert!(if_none_match_hits(&h, &etag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match_hits(&h, &etag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"bafkqaab\""),
        );
        assert!(!if_none_match_hits(&h, &etag));
    }

    #[test]
    fn security_headers_present() {
        let mut h = HeaderMap::new();
        media_security(&mut h);
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox;"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["access-control-allow-origin"], "*");
    }
}
