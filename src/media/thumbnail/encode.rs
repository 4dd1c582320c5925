//! Encoding thumbnails: JPEG (quality 80 and 4:2:0 chroma, as Synapse's Pillow), PNG (zlib's
//! balanced level with adaptive filters, as Pillow's default), animated GIF.
//!
//! Every client downloads a thumbnail for every image it shows, so its size is bandwidth and
//! mobile data: no larger than Synapse's for the same source and size (issue #17).

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{Delay, ExtendedColorType, Frame, ImageEncoder, RgbaImage};

use super::probe::Output;
use super::resize::{Layout, Pixels};
use super::ThumbnailError;

/// Synapse saves JPEG thumbnails with Pillow's `quality=80`.
const JPEG_QUALITY: u8 = 80;
/// NeuQuant speed for GIF frames: 1 is slowest and best; 10 is Pillow-like and keeps a
/// 100-frame thumbnail well under a second.
const GIF_SPEED: i32 = 10;

/// Encodes a still thumbnail in the source type's output format; a JPEG-bound thumbnail
/// that is actually transparent becomes PNG (Synapse's `needs_alpha` rule).
pub(crate) fn encode_still(
    pixels: Pixels,
    output: Output,
) -> Result<(Vec<u8>, &'static str), ThumbnailError> {
    let internal = |e: image::ImageError| ThumbnailError::Internal(format!("encode: {e}"));
    let mut bytes = Vec::new();
    if output == Output::Jpeg && !pixels.uses_transparency() {
        let pixels = pixels.without_alpha();
        encode_jpeg(&pixels, &mut bytes)?;
        return Ok((bytes, "image/jpeg"));
    }
    // The `image` crate's PNG default is its fastest deflate (zlib header `78 01`), which
    // made an 800x560 thumbnail of a 10.7 KB PNG 10x Synapse's; Pillow writes zlib's
    // default level with adaptive filtering.
    let encoder =
        PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Adaptive);
    write(encoder, &pixels).map_err(internal)?;
    Ok((bytes, "image/png"))
}

/// JPEG through `jpeg-encoder` rather than the `image` crate's encoder, which only writes
/// 4:4:4 chroma (1.4x Pillow's 4:2:0 at the same quality); this one has SIMD paths too.
/// Standard Huffman tables, as Pillow's default: with optimised tables and 4:2:0,
/// jpeg-encoder 0.7.1's output decoded wrong (red came out green) in zune-jpeg, the `image`
/// crate's decoder, though libjpeg read it right; no decoder may be given that doubt.
fn encode_jpeg(pixels: &Pixels, bytes: &mut Vec<u8>) -> Result<(), ThumbnailError> {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    let color = match pixels.layout {
        Layout::L8 => ColorType::Luma,
        Layout::Rgb8 => ColorType::Rgb,
        other => {
            return Err(ThumbnailError::Internal(format!(
                "jpeg from {other:?} pixels"
            )))
        }
    };
    let side = |n: u32| {
        u16::try_from(n).map_err(|_| ThumbnailError::Internal(format!("jpeg side {n} > 65535")))
    };
    let mut encoder = Encoder::new(bytes, JPEG_QUALITY);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode(
            &pixels.data,
            side(pixels.width)?,
            side(pixels.height)?,
            color,
        )
        .map_err(|e| ThumbnailError::Internal(format!("encode: {e}")))
}

fn write(encoder: impl ImageEncoder, pixels: &Pixels) -> Result<(), image::ImageError> {
    encoder.write_image(
        &pixels.data,
        pixels.width,
        pixels.height,
        color(pixels.layout),
    )
}

/// Encodes RGBA frames as a looping animated GIF.
pub(crate) fn encode_gif(frames: Vec<(Pixels, Delay)>) -> Result<Vec<u8>, ThumbnailError> {
    let internal = |e: image::ImageError| ThumbnailError::Internal(format!("encode gif: {e}"));
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_SPEED);
        encoder.set_repeat(Repeat::Infinite).map_err(internal)?;
        let frames = frames.into_iter().map(|(p, delay)| {
            let buffer = RgbaImage::from_raw(p.width, p.height, p.data)
                .ok_or_else(|| ThumbnailError::Internal("frame of the wrong length".into()))?;
            Ok(Frame::from_parts(buffer, 0, 0, delay))
        });
        for frame in frames {
            encoder.encode_frame(frame?).map_err(internal)?;
        }
    }
    Ok(bytes)
}

fn color(layout: Layout) -> ExtendedColorType {
    match layout {
        Layout::L8 => ExtendedColorType::L8,
        Layout::La8 => ExtendedColorType::La8,
        Layout::Rgb8 => ExtendedColorType::Rgb8,
        Layout::Rgba8 => ExtendedColorType::Rgba8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(width: u32, height: u32) -> Pixels {
        let data = (0..width * height)
            .flat_map(|i| {
                let (x, y) = (i % width, i / width);
                [(x * 3) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8]
            })
            .collect();
        Pixels {
            width,
            height,
            layout: Layout::Rgb8,
            data,
        }
    }

    /// The luma component's sampling factors from the JPEG's SOF0 header.
    fn luma_sampling(jpeg: &[u8]) -> (u8, u8) {
        let at = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline SOF0");
        // FF C0, length (2), precision, height (2), width (2), components, then per
        // component: id, sampling (H << 4 | V), table.
        let factors = jpeg[at + 11];
        (factors >> 4, factors & 0x0F)
    }

    #[test]
    fn jpeg_thumbnails_are_4_2_0_like_pillows() {
        let (bytes, ty) = encode_still(photo(64, 48), Output::Jpeg).unwrap();
        assert_eq!(ty, "image/jpeg");
        // Luma 2x2 against chroma 1x1 is 4:2:0; 4:4:4 would be 1x1.
        assert_eq!(luma_sampling(&bytes), (2, 2));
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let px = back.get_pixel(10, 20).0;
        let want = [30u8, 100, ((10 ^ 20) * 7) as u8];
        for (got, want) in px.iter().zip(want) {
            assert!(got.abs_diff(want) < 40, "{px:?} vs {want:?}");
        }
    }

    #[test]
    fn png_thumbnails_are_not_written_at_the_fastest_level() {
        let (bytes, ty) = encode_still(photo(64, 48), Output::Png).unwrap();
        assert_eq!(ty, "image/png");
        let idat = bytes
            .windows(4)
            .position(|w| w == b"IDAT")
            .expect("an IDAT chunk");
        // The zlib header's level bits: 78 01 is zlib's fastest, what `image` writes by
        // default; Pillow's default level writes 78 9C (or 78 5E / 78 DA).
        assert_eq!(bytes[idat + 4], 0x78);
        assert_ne!(bytes[idat + 5], 0x01, "fastest deflate level");
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back.as_raw(), &photo(64, 48).data);
    }
}
