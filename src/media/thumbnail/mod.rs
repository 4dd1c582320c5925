//! The thumbnailer: pure, synchronous rendering of Matrix media thumbnails (no I/O, no
//! async: call it from `spawn_blocking`).
//!
//! The steps, each its own module:
//! - [`params`]: the query string to a [`ThumbnailRequest`];
//! - [`probe()`]: the source's format and displayed size from its header only, refusing
//!   decompression bombs before any pixel is decoded;
//! - [`select`]: which configured size answers the request, by Synapse's rules;
//! - [`render()`]: decode, resize (SIMD Lanczos3), apply EXIF orientation, crop, encode.
//!
//! What it makes is what Synapse makes: `image/jpeg` and `image/webp` sources give JPEG
//! (quality 80) unless the thumbnail is actually transparent, `image/png` and `image/gif`
//! give PNG; `animated=true` on an animated GIF, WebP or APNG gives an animated GIF (Synapse
//! gives animated WebP; the spec allows both and this needs no C library).
//!
//! # Use
//! [`probe()`] the source, [`select_size`] (or [`dynamic_size`]) for the request, then
//! [`render()`] that size; `respond::thumbnail` does exactly that, with its cache between
//! selecting and rendering.
//!
//! A cache can key on the CID, [`select_size`]'s answer (from [`probe()`]'s size) and
//! `animated`: [`render()`] of those is deterministic.
//!
//! # Memory and work bound per render
//! Sources over [`Limits::max_source_bytes`] are refused before parsing; sources whose
//! header claims `width * height >= max_pixels`, or whose decoded image (width x height x
//! the bytes a pixel of its colour type takes: 16-bit channels and alpha included) would be
//! over [`Limits::max_decoded_bytes`], are refused after reading the header only. Past that,
//! one call holds at most: the source bytes, the decoded image (at most `max_decoded_bytes`;
//! a JPEG shrunk while decoding holds 1/4 to 1/64 of it), an 8-bit copy of a 16-bit or float
//! image (at most half of it, while the decoded one is freed) and the resizer's intermediate
//! (thumbnail width x source height, at most the decoded size). So the worst case is
//! `2 x max_decoded_bytes + max_source_bytes`: 320 MiB at the defaults. The decoders are also
//! given an allocation cap ([`Limits::decoder_alloc`]) as a second line of defence. An
//! animation holds one decoded canvas (plus the decoder's compositing canvas) at a time, its
//! thumbnail frames, and stops being animated past [`Limits::max_frames`] frames or
//! [`Limits::max_animation_pixels`] decoded pixels in all.
//!
//! Work is bounded the same way: a decoder cannot be interrupted, so what makes it slow is
//! refused from the header. A progressive JPEG decodes every scan over the whole image (a
//! real one has about 10), so one with more than [`Limits::max_jpeg_scans`] scans is refused.
//! [`render_until`] also stops at its next checkpoint (between decode, resize and encode,
//! and between animation frames) once its caller has given up.

mod decode;
mod encode;
pub mod params;
mod probe;
mod render;
mod resize;
pub mod select;

pub use params::{from_query, parse_query, Method, ParamError, ThumbnailRequest};
pub use probe::{probe, SourceInfo};
pub use render::{render, render_each_until, render_until};
pub use select::{dynamic_size, output_size, select_size, ThumbnailSize, DEFAULT_SIZES};

/// Bounds on the work and memory one thumbnail may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sources with `width * height >= max_pixels` are not thumbnailed (Synapse's
    /// `max_image_pixels`, default `32M` = 32 MiPixels, compared the same way).
    pub max_pixels: u64,
    /// Larger sources are refused before parsing.
    pub max_source_bytes: usize,
    /// An animation with more frames gives a still thumbnail.
    pub max_frames: usize,
    /// An animation whose frames add up to more decoded pixels gives a still thumbnail.
    pub max_animation_pixels: u64,
    /// Sources whose decoded image would take more bytes are not thumbnailed.
    pub max_decoded_bytes: u64,
    /// JPEGs with more scans (SOS markers) are not thumbnailed.
    pub max_jpeg_scans: usize,
}

/// 32 Mpx of 8-bit RGBA, or 16 Mpx of 16-bit RGBA.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 128 << 20;
/// Progressive JPEGs from libjpeg, mozjpeg and Photoshop have 6 to 12 scans.
pub const DEFAULT_MAX_JPEG_SCANS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 32 * 1024 * 1024,
            max_source_bytes: 64 * 1024 * 1024,
            max_frames: 100,
            max_animation_pixels: 64 * 1024 * 1024,
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            max_jpeg_scans: DEFAULT_MAX_JPEG_SCANS,
        }
    }
}

impl Limits {
    /// The allocation cap handed to the decoders: room for one decoded image of
    /// `max_decoded_bytes`, plus slack for their own tables.
    pub fn decoder_alloc(&self) -> u64 {
        self.max_decoded_bytes.saturating_add(64 << 20)
    }
}

/// A rendered thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png` or (animated) `image/gif`.
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why no thumbnail could be made. None of these is the client's fault: Synapse answers
/// all of them as media it has no thumbnail for (the mapping is in `error`).
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not a type Synapse thumbnails (by declared type, or by the bytes' real format).
    #[error("cannot thumbnail {0}")]
    Unsupported(String),
    /// More pixels than [`Limits::max_pixels`]: refused from the header, before decoding.
    #[error("image of {width}x{height} pixels is too large to thumbnail")]
    TooLarge { width: u32, height: u32 },
    /// A JPEG with more scans than [`Limits::max_jpeg_scans`]: refused before decoding.
    #[error("JPEG with more than {max} scans")]
    TooManyScans { max: usize },
    /// The decoded image would be over [`Limits::max_decoded_bytes`].
    #[error("image of {width}x{height} pixels would decode to {bytes} bytes, over {max}")]
    TooManyBytes {
        width: u32,
        height: u32,
        bytes: u64,
        max: u64,
    },
    /// The caller gave up (client gone, deadline passed): stopped at a checkpoint.
    #[error("the render was abandoned")]
    Abandoned,
    /// More bytes than [`Limits::max_source_bytes`].
    #[error("source of {len} bytes is larger than the {max} bytes thumbnailed")]
    SourceTooLarge { len: usize, max: usize },
    /// The bytes are not a valid image of their format.
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
    /// A bug or an encoder failure (including a caught panic).
    #[error("thumbnailing failed: {0}")]
    Internal(String),
}
