//! Encoders for building CARs and UnixFS nodes in tests: the proxy itself only ever reads
//! them, so none of this ships. One file, included twice: by the library's unit tests
//! (`src/ipfs/mod.rs`, `#[cfg(test)]`) and by integration tests (`#[path]`), each of which
//! has `FileLink` in scope where it includes this.

use cid::Cid;

use super::FileLink;

/// Encodes an unsigned varint.
pub fn encode_varint(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(unsigned_varint::encode::u64(
        value,
        &mut unsigned_varint::encode::u64_buffer(),
    ));
}

/// Encodes a CARv1 (header and sections).
pub fn encode_car<'a>(
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct V1<'r> {
        roots: &'r [Cid],
        version: u64,
    }
    let header = serde_ipld_dagcbor::to_vec(&V1 { roots, version: 1 })
        .expect("a header of CIDs always encodes");
    let mut out = Vec::new();
    encode_varint(header.len() as u64, &mut out);
    out.extend_from_slice(&header);
    for (cid, block) in blocks {
        let cid = cid.to_bytes();
        encode_varint((cid.len() + block.len()) as u64, &mut out);
        out.extend_from_slice(&cid);
        out.extend_from_slice(block);
    }
    out
}

/// Encodes a dag-pb UnixFS File node: `data`, then links with their blocksizes, `filesize` =
/// `data.len() + sum(blocksizes)`.
pub fn encode_file_node(data: &[u8], links: &[FileLink]) -> Vec<u8> {
    let varint = encode_varint;
    /// A length-delimited field (wire type 2).
    fn field_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
        encode_varint(field << 3 | 2, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    let mut unixfs = Vec::new();
    varint(1 << 3, &mut unixfs);
    varint(2, &mut unixfs);
    if !data.is_empty() {
        field_bytes(2, data, &mut unixfs);
    }
    let filesize = data.len() as u64 + links.iter().map(|l| l.blocksize).sum::<u64>();
    varint(3 << 3, &mut unixfs);
    varint(filesize, &mut unixfs);
    for link in links {
        varint(4 << 3, &mut unixfs);
        varint(link.blocksize, &mut unixfs);
    }
    let mut node = Vec::new();
    for link in links {
        let mut pb_link = Vec::new();
        field_bytes(1, &link.cid.to_bytes(), &mut pb_link);
        varint(3 << 3, &mut pb_link);
        varint(link.blocksize, &mut pb_link);
        field_bytes(2, &pb_link, &mut node);
    }
    field_bytes(1, &unixfs, &mut node);
    node
}
