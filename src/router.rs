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
//! A match here only says the path has the shape of a media download; whether the media ID is
//! an ipfs one is decided next (`media::media_id`). Everything else goes to the homeserver.
//! Segments are percent-decoded one by one, so `%2F` never splits a segment and `ipfs%3A`
//! equals `ipfs:`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPath<'a> {
    pub access: Access,
    pub action: Action,
    /// Absent on federation routes: the media is the destination's own.
    pub server_name: Option<Cow<'a, str>>,
    pub media_id: Cow<'a, str>,
    pub file_name: Option<Cow<'a, str>>,
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
pub fn classify(raw_path: &str) -> Option<MediaPath<'_>> {
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
    fn every_download_form() {
        for prefix in [
            "/_matrix/media/r0",
            "/_matrix/media/v1",
            "/_matrix/media/v3",
            "/_matrix/client/v1/media",
            "/_matrix/client/unstable/org.matrix.msc3916/media",
        ] {
            let p = format!("{prefix}/download/example.org/ipfs%3Abafkqaaa/cat%20pic.png");
            let m = classify(&p).unwrap();
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
        let m = classify("/_matrix/media/v3/thumbnail/s/ipfs:x").unwrap();
        assert_eq!((m.access, m.action), (Access::Legacy, Action::Thumbnail));
        let m = classify("/_matrix/client/v1/media/thumbnail/s/ipfs_x").unwrap();
        assert_eq!(
            (m.access, m.action),
            (Access::Authenticated, Action::Thumbnail)
        );
        assert_eq!(
            classify("/_matrix/media/v3/thumbnail/s/ipfs:x/name.png"),
            None
        );
        for prefix in [
            "/_matrix/federation/v1/media",
            "/_matrix/federation/unstable/org.matrix.msc3916.v2/media",
        ] {
            let download = format!("{prefix}/download/ipfs%3Ax");
            let m = classify(&download).unwrap();
            assert_eq!((m.access, m.action), (Access::Federation, Action::Download));
            assert_eq!(m.server_name, None);
            assert_eq!(m.media_id, "ipfs:x");
            let thumbnail = format!("{prefix}/thumbnail/ipfs:x");
            let m = classify(&thumbnail).unwrap();
            assert_eq!(m.action, Action::Thumbnail);
            assert_eq!(classify(&format!("{prefix}/download/ipfs:x/name")), None);
        }
    }

    #[test]
    fn raw_colon_and_no_file_name() {
        let m = classify("/_matrix/media/v3/download/any.server/ipfs:bafkqaaa").unwrap();
        assert_eq!(m.media_id, "ipfs:bafkqaaa");
        assert_eq!(m.file_name, None);
        let m = classify("/_matrix/media/v3/download/any.server/ipfs:bafkqaaa/").unwrap();
        assert_eq!(m.file_name, None);
    }

    #[test]
    fn encoded_slash_stays_in_its_segment() {
        let m = classify("/_matrix/media/v3/download/s/ipfs:x/a%2Fb.txt").unwrap();
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
            assert_eq!(classify(p), None, "{p}");
        }
    }
}
