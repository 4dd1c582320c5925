//! What a source is, from its header alone: this is where decompression bombs stop.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat, ImageReader};

use super::{Limits, ThumbnailError};

/// The thumbnail format Synapse gives a source type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Jpeg,
    Png,
}

/// A source that may be thumbnailed, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    /// Width as displayed: after EXIF orientation. Use this for [`super::select_size`].
    pub width: u32,
    /// Height as displayed.
    pub height: u32,
    /// The format the bytes really are (one of JPEG, PNG, GIF, WebP).
    pub format: ImageFormat,
    pub(crate) stored_width: u32,
    pub(crate) stored_height: u32,
    pub(crate) orientation: Orientation,
    pub(crate) output: Output,
    /// Bytes of the decoded image (width x height x bytes a pixel of its colour type).
    pub decoded_bytes: u64,
}

/// Checks that `source` can be thumbnailed and reads its size, without decoding pixels.
///
/// `source_type` is the media's content type (parameters ignored); like Synapse, only
/// `image/jpeg`, `image/jpg`, `image/png`, `image/gif` and `image/webp` are thumbnailed, and
/// the bytes must really be one of those formats (whichever: the type picks the output).
pub fn probe(
    source: &[u8],
    source_type: &str,
    limits: &Limits,
) -> Result<SourceInfo, ThumbnailError> {
    if source.len() > limits.max_source_bytes {
        return Err(ThumbnailError::SourceTooLarge {
            len: source.len(),
            max: limits.max_source_bytes,
        });
    }
    let output = output_for(source_type)?;
    let format = image::guess_format(source)
        .map_err(|_| ThumbnailError::Corrupt("not a recognised image format".into()))?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP
    ) {
        // The decoders we build in are the only ones we trust with untrusted bytes.
        return Err(ThumbnailError::Unsupported(format!("{format:?} images")));
    }
    if format == ImageFormat::Jpeg
        && jpeg_scans(source, limits.max_jpeg_scans) > limits.max_jpeg_scans
    {
        return Err(ThumbnailError::TooManyScans {
            max: limits.max_jpeg_scans,
        });
    }
    let mut decoder = header_decoder(source, format, limits)?;
    let (stored_width, stored_height) = decoder.dimensions();
    check_pixels(stored_width, stored_height, limits)?;
    // The colour type says what the decoder will allocate: 16-bit RGBA is 8 bytes a pixel.
    let bytes = u64::from(stored_width)
        * u64::from(stored_height)
        * u64::from(decoder.color_type().bytes_per_pixel());
    if bytes > limits.max_decoded_bytes {
        return Err(ThumbnailError::TooManyBytes {
            width: stored_width,
            height: stored_height,
            bytes,
            max: limits.max_decoded_bytes,
        });
    }
    // A broken EXIF block is ignored, as Synapse ignores it.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (width, height) = if swaps_axes(orientation) {
        (stored_height, stored_width)
    } else {
        (stored_width, stored_height)
    };
    Ok(SourceInfo {
        width,
        height,
        format,
        stored_width,
        stored_height,
        orientation,
        output,
        decoded_bytes: bytes,
    })
}

/// How many scans (SOS markers) a JPEG has, counting no further than `max + 1`: one pass
/// over the marker segments, skipping entropy-coded data (where `FF 00` is a stuffed byte and
/// `FF D0`-`FF D7` are restart markers). A broken structure stops the count; the decoder then
/// refuses the file itself.
pub(crate) fn jpeg_scans(source: &[u8], max: usize) -> usize {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let mut scans = 0;
    let mut i = 2; // past SOI
    while i + 1 < source.len() && scans <= max {
        if source[i] != 0xFF {
            return scans;
        }
        let marker = source[i + 1];
        i += 2;
        match marker {
            // Fill bytes before a marker.
            0xFF => i -= 1,
            EOI => return scans,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let Some(len) = source.get(i..i + 2) else {
                    return scans;
                };
                i += usize::from(u16::from_be_bytes([len[0], len[1]]));
                if marker == SOS {
                    scans += 1;
                    // Entropy-coded data runs to the next marker that is not a restart.
                    while i + 1 < source.len()
                        && (source[i] != 0xFF || matches!(source[i + 1], 0x00 | 0xD0..=0xD7))
                    {
                        i += 1;
                    }
                }
            }
        }
    }
    scans
}

/// A decoder that has read the header (and, for JPEG, the markers before the pixels).
pub(crate) fn header_decoder<'a>(
    source: &'a [u8],
    format: ImageFormat,
    limits: &Limits,
) -> Result<impl ImageDecoder + 'a, ThumbnailError> {
    let mut reader = ImageReader::with_format(Cursor::new(source), format);
    reader.limits(image_limits(limits));
    reader.into_decoder().map_err(|e| decode_error(e, 0, 0))
}

/// The decoders' own limits: no width/height cap (we check pixels ourselves, to report the
/// size), an allocation cap as a second line of defence.
pub(crate) fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = None;
    l.max_image_height = None;
    l.max_alloc = Some(limits.decoder_alloc());
    l
}

pub(crate) fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), ThumbnailError> {
    // `>=` as Synapse compares.
    if u64::from(width) * u64::from(height) >= limits.max_pixels {
        return Err(ThumbnailError::TooLarge { width, height });
    }
    Ok(())
}

pub(crate) fn decode_error(e: image::ImageError, width: u32, height: u32) -> ThumbnailError {
    match e {
        image::ImageError::Limits(_) => ThumbnailError::TooLarge { width, height },
        image::ImageError::Unsupported(u) => ThumbnailError::Unsupported(u.to_string()),
        other => ThumbnailError::Corrupt(other.to_string()),
    }
}

/// Whether displaying the stored pixels turns them a quarter turn.
pub(crate) fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn output_for(source_type: &str) -> Result<Output, ThumbnailError> {
    let essence = source_type.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" | "image/webp" => Ok(Output::Jpeg),
        "image/png" | "image/gif" => Ok(Output::Png),
        _ => Err(ThumbnailError::Unsupported(format!(
            "media of type {essence:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types() {
        assert_eq!(output_for("image/jpeg").unwrap(), Output::Jpeg);
        assert_eq!(output_for("IMAGE/JPG; q=1").unwrap(), Output::Jpeg);
        assert_eq!(output_for("image/webp").unwrap(), Output::Jpeg);
        assert_eq!(output_for("image/png").unwrap(), Output::Png);
        assert_eq!(output_for(" image/gif ").unwrap(), Output::Png);
        for t in [
            "image/svg+xml",
            "image/bmp",
            "application/pdf",
            "",
            "image/apng",
        ] {
            assert!(
                matches!(output_for(t), Err(ThumbnailError::Unsupported(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn jpeg_scans_are_counted_through_entropy_data() {
        // SOI, DQT (length 4), SOS (length 3) + data with a stuffed FF 00 and a restart
        // marker, SOS again, EOI.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x04, 1, 2, 0xFF, 0xDA, 0x00, 0x03, 9, 1, 0xFF, 0x00, 2,
            0xFF, 0xD3, 3, 0xFF, 0xDA, 0x00, 0x03, 9, 4, 0xFF, 0xD9,
        ];
        assert_eq!(jpeg_scans(&jpeg, 64), 2);
        assert_eq!(jpeg_scans(&jpeg, 0), 1, "counting stops past the limit");
        assert_eq!(jpeg_scans(&jpeg[..12], 64), 1);
        assert_eq!(jpeg_scans(b"\xFF\xD8garbage", 64), 0);
    }

    #[test]
    fn garbage_and_oversize() {
        let limits = Limits::default();
        assert!(matches!(
            probe(b"hello world", "image/png", &limits),
            Err(ThumbnailError::Corrupt(_))
        ));
        assert!(matches!(
            probe(&[], "image/png", &limits),
            Err(ThumbnailError::Corrupt(_))
        ));
        let small = Limits {
            max_source_bytes: 4,
            ..limits
        };
        assert!(matches!(
            probe(b"12345", "image/png", &small),
            Err(ThumbnailError::SourceTooLarge { len: 5, max: 4 })
        ));
    }
}
