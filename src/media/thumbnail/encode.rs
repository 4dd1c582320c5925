//! Encoding thumbnails: JPEG (quality 80, as Synapse), PNG, animated GIF.

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
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
        write(
            JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY),
            &pixels,
        )
        .map_err(internal)?;
        return Ok((bytes, "image/jpeg"));
    }
    write(PngEncoder::new(&mut bytes), &pixels).map_err(internal)?;
    Ok((bytes, "image/png"))
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
