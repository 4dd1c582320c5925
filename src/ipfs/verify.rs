//! Checking a block against its CID, the root of verified retrieval.
//!
//! Only an explicit allow-list of hash functions is accepted: a CID naming any other function
//! is refused rather than trusted, because a block we cannot hash is a block we cannot check.
//!
//! | multihash code | function | digest |
//! |---|---|---|
//! | `0x12` | sha2-256 | 32 bytes |
//! | `0x1e` | blake3 | 32 bytes (the default output length) |
//! | `0x00` | identity | the block itself, at most [`MAX_IDENTITY_DIGEST`] bytes |
//!
//! Blocks over [`MAX_BLOCK_SIZE`] are refused before any hashing (the IPFS network does not
//! move larger blocks, so such a block is a sign of a broken or hostile source).

use bytes::Bytes;
use cid::Cid;
use sha2::Digest as _;

use super::multicodec::{BLAKE3, IDENTITY, SHA2_256};

/// The largest block accepted: 2 MiB, the limit the IPFS network's transfers use.
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;

/// The longest identity digest accepted (the limit the trustless gateway spec names).
///
/// Note that `cid::Cid` holds digests of at most 64 bytes, so longer identity CIDs are already
/// refused when they are parsed.
pub const MAX_IDENTITY_DIGEST: usize = 128;

/// Why a block is not the one its CID names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "hash function 0x{code:x} is not supported (supported: sha2-256 0x12, blake3 0x1e, \
         identity 0x00)"
    )]
    UnsupportedHash { code: u64 },
    #[error("multihash 0x{code:x} has a {len}-byte digest, expected {expected}")]
    DigestLength {
        code: u64,
        len: usize,
        expected: usize,
    },
    #[error("block of {len} bytes is over the {limit}-byte limit")]
    BlockTooLarge { len: usize, limit: usize },
    #[error("identity CID digest of {len} bytes is over the {limit}-byte limit")]
    IdentityTooLong { len: usize, limit: usize },
    #[error("block does not match its CID {cid}")]
    Mismatch { cid: Cid },
}

/// Checks that `block` is exactly the block `cid` names.
///
/// For an identity CID the block must equal the digest. The CID's codec is not looked at
/// here: decoding is the caller's business.
pub fn verify_block(cid: &Cid, block: &[u8]) -> Result<(), VerifyError> {
    // Size first, so an oversized block is refused without hashing it.
    if block.len() > MAX_BLOCK_SIZE {
        return Err(VerifyError::BlockTooLarge {
            len: block.len(),
            limit: MAX_BLOCK_SIZE,
        });
    }
    let mh = cid.hash();
    let digest = mh.digest();
    let matches = match mh.code() {
        IDENTITY => {
            check_identity_len(digest.len())?;
            digest == block
        }
        SHA2_256 => {
            expect_len(SHA2_256, digest.len(), 32)?;
            sha2::Sha256::digest(block).as_slice() == digest
        }
        BLAKE3 => {
            expect_len(BLAKE3, digest.len(), 32)?;
            blake3::hash(block).as_bytes() == digest
        }
        code => return Err(VerifyError::UnsupportedHash { code }),
    };
    if matches {
        Ok(())
    } else {
        Err(VerifyError::Mismatch { cid: *cid })
    }
}

/// The block of an identity CID (its digest), `None` for a CID that names a hash.
///
/// Identity blocks never need fetching: the CID carries them.
pub fn identity_block(cid: &Cid) -> Result<Option<Bytes>, VerifyError> {
    let mh = cid.hash();
    if mh.code() != IDENTITY {
        return Ok(None);
    }
    check_identity_len(mh.digest().len())?;
    Ok(Some(Bytes::copy_from_slice(mh.digest())))
}

/// Whether `cid` uses a hash function this module can check (identity included).
pub fn is_supported(cid: &Cid) -> bool {
    matches!(cid.hash().code(), IDENTITY | SHA2_256 | BLAKE3)
}

fn check_identity_len(len: usize) -> Result<(), VerifyError> {
    if len > MAX_IDENTITY_DIGEST {
        return Err(VerifyError::IdentityTooLong {
            len,
            limit: MAX_IDENTITY_DIGEST,
        });
    }
    Ok(())
}

fn expect_len(code: u64, len: usize, expected: usize) -> Result<(), VerifyError> {
    // A truncated digest would be weaker than the function promises; refuse it.
    if len != expected {
        return Err(VerifyError::DigestLength {
            code,
            len,
            expected,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::multicodec::RAW;
    use cid::multihash::Multihash;

    fn cid_with(code: u64, digest: &[u8]) -> Cid {
        Cid::new_v1(RAW, Multihash::wrap(code, digest).unwrap())
    }

    fn sha256_cid(data: &[u8]) -> Cid {
        cid_with(SHA2_256, &sha2::Sha256::digest(data))
    }

    #[test]
    fn sha256_matches_known_cid() {
        // `hello world\n` added with raw leaves by any IPFS implementation.
        let cid: Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
            .parse()
            .unwrap();
        verify_block(&cid, b"hello world\n").unwrap();
        assert_eq!(
            verify_block(&cid, b"hello world!"),
            Err(VerifyError::Mismatch { cid })
        );
    }

    #[test]
    fn blake3_known_vector() {
        // BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
        let digest = hex_decode("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        let cid = cid_with(BLAKE3, &digest);
        verify_block(&cid, b"").unwrap();
        assert!(matches!(
            verify_block(&cid, b"x"),
            Err(VerifyError::Mismatch { .. })
        ));
    }

    #[test]
    fn unsupported_hash_is_named() {
        // sha2-512 (0x13) is a fine function, but not on the allow-list.
        let cid = cid_with(0x13, &[0u8; 64]);
        let err = verify_block(&cid, b"").unwrap_err();
        assert_eq!(err, VerifyError::UnsupportedHash { code: 0x13 });
        assert!(err.to_string().contains("0x13"), "{err}");
        assert!(!is_supported(&cid));
    }

    #[test]
    fn truncated_digest_refused() {
        let cid = cid_with(SHA2_256, &sha2::Sha256::digest(b"a")[..20]);
        assert_eq!(
            verify_block(&cid, b"a"),
            Err(VerifyError::DigestLength {
                code: SHA2_256,
                len: 20,
                expected: 32
            })
        );
    }

    #[test]
    fn identity_inline() {
        let cid = cid_with(IDENTITY, b"inline bytes");
        assert_eq!(
            identity_block(&cid).unwrap(),
            Some(Bytes::from_static(b"inline bytes"))
        );
        verify_block(&cid, b"inline bytes").unwrap();
        assert!(verify_block(&cid, b"other").is_err());
        // The empty identity CID the health probe uses.
        let empty: Cid = "bafkqaaa".parse().unwrap();
        assert_eq!(identity_block(&empty).unwrap(), Some(Bytes::new()));
        assert_eq!(identity_block(&sha256_cid(b"x")).unwrap(), None);
    }

    #[test]
    fn oversized_block_refused_before_hashing() {
        let block = vec![0u8; MAX_BLOCK_SIZE + 1];
        let cid = sha256_cid(&block);
        assert_eq!(
            verify_block(&cid, &block),
            Err(VerifyError::BlockTooLarge {
                len: MAX_BLOCK_SIZE + 1,
                limit: MAX_BLOCK_SIZE
            })
        );
        let block = vec![0u8; MAX_BLOCK_SIZE];
        verify_block(&sha256_cid(&block), &block).unwrap();
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
