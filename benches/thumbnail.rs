//! `cargo bench --bench thumbnail`: our thumbnailer against Synapse's (Pillow, LANCZOS) on
//! the same 12-megapixel JPEG, made by `thumbnail_pillow.py` into `benches/out/` (not
//! committed). Set `THUMBNAIL_BENCH_PYTHON` to a Python with Pillow (default `python3`);
//! without one the JPEG is made with the `image` crate and only our figures are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipfs_media_proxy::media::thumbnail::{render, Limits, ThumbnailSize, DEFAULT_SIZES};

const RUNS: usize = 5;

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/out");
    std::fs::create_dir_all(&out).expect("create benches/out");
    let source_path = out.join("12mp.jpg");
    let python = std::env::var("THUMBNAIL_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/thumbnail_pillow.py");
    if !source_path.exists() && !pillow(&python, &script, "make", &source_path) {
        make_without_pillow(&source_path);
    }
    let source = std::fs::read(&source_path).expect("read the test JPEG");
    let limits = Limits::default();
    println!("source: {} ({} bytes)", source_path.display(), source.len());

    let one = |size: ThumbnailSize| {
        render(&source, "image/jpeg", size, false, &limits).expect("thumbnail")
    };
    for size in DEFAULT_SIZES {
        let t = one(size);
        std::fs::write(
            out.join(format!(
                "{}x{}-{}.jpg",
                size.width, size.height, size.method
            )),
            &t.bytes,
        )
        .expect("write thumbnail");
        let took = median(|| {
            one(size);
        });
        println!(
            "ours  {:>3}x{:<3} {:<5} -> {}x{}: {:>7.1} ms",
            size.width,
            size.height,
            size.method,
            t.width,
            t.height,
            ms(took)
        );
    }
    let five = median(|| {
        for size in DEFAULT_SIZES {
            one(size);
        }
    });
    let one_800 = median(|| {
        one(ThumbnailSize::new(
            800,
            600,
            ipfs_media_proxy::media::thumbnail::Method::Scale,
        ));
    });
    println!(
        "ours  five default sizes, each from the file: {:>7.1} ms",
        ms(five)
    );
    println!(
        "ours  one 800x600 from the file:              {:>7.1} ms",
        ms(one_800)
    );

    let output = Command::new(&python)
        .arg(&script)
        .arg("bench")
        .arg(&source_path)
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let json: serde_json::Value = serde_json::from_str(text.trim()).expect("pillow json");
            let p_five = json["five_from_one_decode"].as_f64().unwrap_or(f64::NAN) * 1000.0;
            let p_one = json["one_800x600"].as_f64().unwrap_or(f64::NAN) * 1000.0;
            println!(
                "pillow {} five default sizes from one decode: {p_five:>7.1} ms",
                json["pillow"]
            );
            println!(
                "pillow {} one 800x600 from the file:          {p_one:>7.1} ms",
                json["pillow"]
            );
            println!(
                "ratio five sizes: Pillow / ours = {:.1}x",
                p_five / ms(five)
            );
            println!(
                "ratio one 800x600: Pillow / ours = {:.1}x",
                p_one / ms(one_800)
            );
        }
        _ => println!(
            "Pillow not available via {python}: set THUMBNAIL_BENCH_PYTHON for the comparison"
        ),
    }

    // Bytes: every client downloads these for every image it shows.
    let png_path = out.join("drawing-1000x700.png");
    if !png_path.exists() {
        pillow(&python, &script, "make-png", &png_path);
    }
    for (path, ty) in [(&source_path, "image/jpeg"), (&png_path, "image/png")] {
        let Ok(source) = std::fs::read(path) else {
            continue;
        };
        let theirs = Command::new(&python)
            .arg(&script)
            .arg("sizes")
            .arg(path)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        println!("bytes of {} ({} bytes):", path.display(), source.len());
        for size in DEFAULT_SIZES {
            let ours = render(&source, ty, size, false, &limits)
                .expect("thumbnail")
                .bytes
                .len();
            let key = format!("{}x{}-{}", size.width, size.height, size.method);
            match theirs.as_ref().and_then(|t| t[&key].as_u64()) {
                Some(pillow) => println!(
                    "  {key:<13} ours {ours:>8}  pillow {pillow:>8}  ours/pillow {:.2}",
                    ours as f64 / pillow as f64
                ),
                None => println!("  {key:<13} ours {ours:>8}"),
            }
        }
    }
}

fn pillow(python: &str, script: &Path, command: &str, path: &PathBuf) -> bool {
    Command::new(python)
        .arg(script)
        .arg(command)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// A stand-in when Pillow is missing: a noisy gradient, JPEG quality 90.
fn make_without_pillow(path: &Path) {
    let mut seed: u32 = 1;
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (seed >> 26) as u8;
        image::Rgb([(x / 16) as u8, (y / 12) as u8, noise.wrapping_mul(4)])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&img)
        .expect("encode the test JPEG");
    std::fs::write(path, bytes).expect("write the test JPEG");
}

fn median(mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
