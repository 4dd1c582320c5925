//! Advertising MSC2706 on the homeserver's capabilities response.
//!
//! THIS IS THE ONLY RESPONSE THE PROXY EVER EDITS. When `capabilities.advertise_ipfs` is on
//! (or `upload.enabled`: the capability is what tells MSC2706 clients that
//! `POST /_matrix/media/v3/pin/{cid}` is there),
//! `GET /_matrix/client/{v3,r0}/capabilities` answers pass through here and gain
//! `"m.ipfs"` and its unstable name `"io.t2bot.ipfs"` inside `"capabilities"`; every other
//! byte stays as the homeserver sent it (the entries are spliced in as text, not by
//! re-serialising the JSON). Anything unexpected (not 200, not JSON, compressed, too large,
//! already advertising) passes through untouched.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::{self, Body};

/// The homeserver's capabilities answer broke off or was over the size we read.
#[derive(Debug, thiserror::Error)]
#[error("the homeserver's capabilities could not be read")]
pub struct Unreadable;
const STABLE: &str = "m.ipfs";
const UNSTABLE: &str = "io.t2bot.ipfs";
/// A capabilities answer is a few KiB; more than this is passed on unread.
const MAX_BODY: usize = 1024 * 1024;

/// The text spliced into `"capabilities": {`, built once from the config.
#[derive(Debug, Clone)]
pub struct Advertisement {
    entries: String,
}

impl Advertisement {
    /// `stores_uploads`: every user's `POST .../upload` is stored on IPFS by this proxy, said
    /// as `"stores_uploads": true` so MSC2706-aware clients know their uploads become ipfs
    /// media (and public).
    pub fn new(preferred_origin: Option<&str>, stores_uploads: bool) -> Self {
        let mut value = serde_json::json!({ "enabled": true });
        if let Some(origin) = preferred_origin {
            value["preferred_origin"] = origin.into();
        }
        if stores_uploads {
            value["stores_uploads"] = true.into();
        }
        let value = value.to_string();
        Self {
            entries: format!("\"{STABLE}\":{value},\"{UNSTABLE}\":{value}"),
        }
    }

    /// The homeserver's response with the capability added, or unchanged.
    pub async fn edit(&self, response: Response<Body>) -> Result<Response<Body>, Unreadable> {
        let headers = response.headers();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if response.status() != StatusCode::OK
            || !is_json
            || headers.contains_key(header::CONTENT_ENCODING)
        {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        let bytes = body::collect_limited(body, MAX_BODY)
            .await
            .map_err(|_| Unreadable)?;
        let edited = match splice(&bytes, &self.entries) {
            Some(edited) => Bytes::from(edited),
            None => bytes,
        };
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(edited.len()));
        Ok(Response::from_parts(parts, body::full(edited)))
    }
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    capabilities: &'a RawValue,
}

/// Inserts `entries` at the start of the `"capabilities"` object, or `None` when the body is
/// not the expected shape or already names the capability.
fn splice(body: &[u8], entries: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let top: Top<'_> = serde_json::from_str(text).ok()?;
    let raw = top.capabilities.get();
    let names: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).ok()?;
    if names.contains_key(STABLE) || names.contains_key(UNSTABLE) {
        return None;
    }
    // `raw` borrows from `text`, so its address gives its offset.
    let offset = raw.as_ptr() as usize - text.as_ptr() as usize;
    let open = offset + raw.find('{')? + 1;
    let separator = if names.is_empty() { "" } else { "," };
    let mut out = Vec::with_capacity(body.len() + entries.len() + 1);
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(entries.as_bytes());
    out.extend_from_slice(separator.as_bytes());
    out.extend_from_slice(&body[open..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> String {
        Advertisement::new(Some("media.example.org"), false).entries
    }

    #[test]
    fn says_when_uploads_are_stored_on_ipfs() {
        let with = Advertisement::new(None, true).entries;
        assert_eq!(
            with,
            r#""m.ipfs":{"enabled":true,"stores_uploads":true},"io.t2bot.ipfs":{"enabled":true,"stores_uploads":true}"#
        );
        assert!(!Advertisement::new(None, false)
            .entries
            .contains("stores_uploads"));
    }

    #[test]
    fn splices_without_touching_other_bytes() {
        let body = br#"{"capabilities": {"m.change_password": {"enabled": true},  "m.room_versions": {"default": "10"}}, "extra":  1}"#;
        let out = String::from_utf8(splice(body, &entries()).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"capabilities": {"m.ipfs":{"enabled":true,"preferred_origin":"media.example.org"},"io.t2bot.ipfs":{"enabled":true,"preferred_origin":"media.example.org"},"m.change_password": {"enabled": true},  "m.room_versions": {"default": "10"}}, "extra":  1}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["capabilities"]["m.ipfs"]["enabled"], true);
    }

    #[test]
    fn empty_object_and_nested_decoys() {
        let out = splice(
            br#"{"x":{"capabilities":{"a":1}},"capabilities":{ }}"#,
            "\"m.ipfs\":{}",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"x":{"capabilities":{"a":1}},"capabilities":{"m.ipfs":{} }}"#
        );
    }

    #[test]
    fn leaves_odd_bodies_alone() {
        assert!(splice(b"not json", &entries()).is_none());
        assert!(splice(br#"{"capabilities": []}"#, &entries()).is_none());
        assert!(splice(br#"{"capabilities": {"m.ipfs": {}}}"#, &entries()).is_none());
        assert!(splice(br#"{"other": {}}"#, &entries()).is_none());
    }
}
