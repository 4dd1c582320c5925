//! MSC2706 media IDs: `ipfs:<cid>`, and the grammar-compliant alias `ipfs_<cid>`.
//!
//! A media ID is ours when, after percent-decoding, it starts with `ipfs:` or with the
//! configured alias prefix (`ipfs_` by default; case-sensitive). The spec limits media IDs to
//! `[A-Za-z0-9_-]`, and Dendrite, Conduit-family servers and matrix-rust-sdk clients reject
//! `ipfs:` before sending a request; CIDv1 in base32/base36 and CIDv0 fit the grammar, so
//! `ipfs_<cid>` reaches us from every implementation. Both forms name the same content.
//! The CID is parsed by the `cid` crate; the gateway request is later built from the parsed
//! value, never from the client's text.

use cid::Cid;

/// The MSC2706 prefix.
pub const IPFS_PREFIX: &str = "ipfs:";

/// Longest CID text we try to parse: real CIDs are well under 200 characters, and a bound
/// keeps hostile input cheap.
const MAX_CID_LEN: usize = 256;

/// A requested ipfs media item, with the key it is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpfsMedia {
    /// The CID as parsed (v0 stays v0 so the gateway sees the form the client used).
    pub cid: Cid,
    /// CIDv1 of the same content: v0 `Qm...` and its v1 form are one cache entry, one ETag.
    pub canonical: Cid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaIdError {
    #[error("the media ID has an `ipfs:` prefix but `{0}` is not a valid CID")]
    InvalidCid(String),
}

/// The alias prefix shipped by default.
pub const DEFAULT_ALIAS_PREFIX: &str = "ipfs_";

/// `None` when the media ID is not an ipfs one (the homeserver's business);
/// `Some(Err)` when it claims to be but the CID is bad. An empty `alias_prefix` turns the
/// alias off.
pub fn parse(
    decoded_media_id: &str,
    alias_prefix: &str,
) -> Option<Result<IpfsMedia, MediaIdError>> {
    let text = decoded_media_id.strip_prefix(IPFS_PREFIX).or_else(|| {
        (!alias_prefix.is_empty())
            .then(|| decoded_media_id.strip_prefix(alias_prefix))
            .flatten()
    })?;
    Some(parse_cid(text))
}

fn parse_cid(text: &str) -> Result<IpfsMedia, MediaIdError> {
    let invalid = || {
        let shown: String = text.chars().take(80).collect();
        MediaIdError::InvalidCid(shown)
    };
    if text.is_empty() || text.len() > MAX_CID_LEN || !text.is_ascii() {
        return Err(invalid());
    }
    let cid = Cid::try_from(text).map_err(|_| invalid())?;
    let canonical = cid.into_v1().map_err(|_| invalid())?;
    Ok(IpfsMedia { cid, canonical })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A CIDv1 raw (sha2-256) and a CIDv0 (dag-pb, sha2-256), as Kubo prints them.
    const V1_RAW: &str = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq";
    const V0: &str = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u";

    #[test]
    fn not_ours_without_prefix() {
        assert!(parse("AbCdEfGhIjKlMnOpQrStUvWx", "ipfs_").is_none());
        assert!(
            parse("IPFS:bafkqaaa", "ipfs_").is_none(),
            "the prefix is case-sensitive"
        );
        assert!(
            parse("ipfs_bafkqaaa", "").is_none(),
            "an empty alias turns it off"
        );
    }

    #[test]
    fn alias_names_the_same_content() {
        let a = parse(&format!("ipfs:{V1_RAW}"), "ipfs_").unwrap().unwrap();
        let b = parse(&format!("ipfs_{V1_RAW}"), "ipfs_").unwrap().unwrap();
        assert_eq!(a, b);
        let v0 = parse(&format!("x-{V0}"), "x-").unwrap().unwrap();
        assert_eq!(v0.canonical.hash(), v0.cid.hash());
    }

    #[test]
    fn v1_and_v0_parse() {
        let m = parse(&format!("ipfs:{V1_RAW}"), "").unwrap().unwrap();
        assert_eq!(m.cid.to_string(), V1_RAW);
        assert_eq!(m.canonical, m.cid);
        let m = parse(&format!("ipfs:{V0}"), "").unwrap().unwrap();
        assert_eq!(m.cid.version(), cid::Version::V0);
        assert_eq!(m.canonical.version(), cid::Version::V1);
        assert_eq!(m.canonical.hash(), m.cid.hash());
    }

    #[test]
    fn base36_v1_is_the_same_content() {
        let v1: Cid = V1_RAW.parse().unwrap();
        let b36 = v1.to_string_of_base(multibase::Base::Base36Lower).unwrap();
        let m = parse(&format!("ipfs:{b36}"), "").unwrap().unwrap();
        assert_eq!(m.canonical, v1);
    }

    #[test]
    fn bad_cids_are_errors() {
        for bad in ["", "notacid", "bafy!!!", &"b".repeat(300), "Qm€"] {
            assert!(
                matches!(
                    parse(&format!("ipfs:{bad}"), ""),
                    Some(Err(MediaIdError::InvalidCid(_)))
                ),
                "{bad}"
            );
        }
    }
}
