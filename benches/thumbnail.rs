//! `cargo bench --bench thumbnail`: our thumbnailer against Synapse's (Pillow, LANCZOS) on
//! the same sources, made by `thumbnail_pillow.py` into `benches/out/` (not committed): a
//! 12-megapixel JPEG, a 3840x2160 screenshot-like PNG and a 1000x700 drawing PNG. Set
//! `THUMBNAIL_BENCH_PYTHON` to a Python with Pillow (default `python3`); without one the
//! JPEG is made with the `image` crate and only our figures are printed.
//!
//! For each of the first two it prints, in one run: the five default sizes from one decode
//! (what both the proxy, with `thumbnails.all_sizes`, and Synapse do for a new source), one
//! 800x600 from the file, and for the JPEG libjpeg-turbo's own 1/4-scale decode (Pillow's
//! `draft`), the floor under any single thumbnail made from the file. Then the bytes of
//! every default size of all three, ours against Pillow's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipfs_media_proxy::media::thumbnail::{
    render, render_each_until, Limits, Method, ThumbnailSize, DEFAULT_SIZES,
};

const RUNS: usize = 5;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("benches/out");
    std::fs::create_dir_all(&out).expect("create benches/out");
    let python = std::env::var("THUMBNAIL_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let pillow = Pillow {
        python,
        script: root.join("benches/thumbnail_pillow.py"),
    };
    let jpeg = out.join("12mp.jpg");
    if !jpeg.exists() && !pillow.run(&["make"], &jpeg, None) {
        make_without_pillow(&jpeg);
    }
    let large_png = out.join("screenshot-3840x2160.png");
    if !large_png.exists() {
        pillow.run(&["make-large-png"], &large_png, Some(&jpeg));
    }
    let drawing = out.join("drawing-1000x700.png");
    if !drawing.exists() {
        pillow.run(&["make-png"], &drawing, None);
    }
    let limits = Limits::default();

    for (path, ty) in [(&jpeg, "image/jpeg"), (&large_png, "image/png")] {
        let Ok(source) = std::fs::read(path) else {
            println!("no {}: Pillow is needed to make it", path.display());
            continue;
        };
        speed(&source, ty, path, &pillow, &limits, &out);
    }

    // Bytes: every client downloads these for every image it shows.
    let sources = [
        (&jpeg, "image/jpeg"),
        (&large_png, "image/png"),
        (&drawing, "image/png"),
    ];
    for (path, ty) in sources {
        let Ok(source) = std::fs::read(path) else {
            continue;
        };
        let theirs = pillow.json(&["sizes"], path);
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

/// Times one source our way and Pillow's, in the same run, and prints the ratios.
fn speed(source: &[u8], ty: &str, path: &Path, pillow: &Pillow, limits: &Limits, out: &Path) {
    println!("source: {} ({} bytes)", path.display(), source.len());
    let one = |size: ThumbnailSize| render(source, ty, size, false, limits).expect("thumbnail");
    let ext = if ty == "image/jpeg" { "jpg" } else { "png" };
    for size in DEFAULT_SIZES {
        let t = one(size);
        let name = format!("{}x{}-{}.{ext}", size.width, size.height, size.method);
        std::fs::write(out.join(name), &t.bytes).expect("write thumbnail");
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
    let each_from_file = median(|| {
        for size in DEFAULT_SIZES {
            one(size);
        }
    });
    let five = median(|| {
        five_from_one_decode(source, ty, limits);
    });
    let one_800 = median(|| {
        one(ThumbnailSize::new(800, 600, Method::Scale));
    });
    println!(
        "ours  five default sizes, each from the file: {:>7.1} ms",
        ms(each_from_file)
    );
    println!(
        "ours  five default sizes from one decode:     {:>7.1} ms",
        ms(five)
    );
    println!(
        "ours  one 800x600 from the file:              {:>7.1} ms",
        ms(one_800)
    );
    let Some(json) = pillow.json(&["bench"], path) else {
        println!(
            "Pillow not available via {}: set THUMBNAIL_BENCH_PYTHON for the comparison",
            pillow.python
        );
        return;
    };
    let secs = |key: &str| json[key].as_f64().map(|s| s * 1000.0);
    let version = &json["pillow"];
    let p_five = secs("five_from_one_decode").unwrap_or(f64::NAN);
    let p_one = secs("one_800x600").unwrap_or(f64::NAN);
    println!("pillow {version} five default sizes from one decode: {p_five:>7.1} ms");
    println!("pillow {version} one 800x600 from the file:          {p_one:>7.1} ms");
    if let Some(floor) = secs("decode_quarter") {
        println!(
            "pillow {version} libjpeg-turbo decode at 1/4 only:    {floor:>7.1} ms \
             (one 800x600 at 5x Pillow would need {:.1} ms)",
            p_one / 5.0
        );
    }
    println!(
        "ratio five sizes from one decode: Pillow / ours = {:.1}x",
        p_five / ms(five)
    );
    println!(
        "ratio one 800x600 from the file: Pillow / ours = {:.1}x",
        p_one / ms(one_800)
    );
}

/// What the proxy does on a source's first thumbnail (`thumbnails.all_sizes`, the default):
/// one decode, every configured size made from it.
fn five_from_one_decode(source: &[u8], ty: &str, limits: &Limits) -> usize {
    let mut made = 0;
    render_each_until(source, ty, &DEFAULT_SIZES, limits, &|| true, &mut |_, t| {
        made += t.bytes.len()
    })
    .expect("thumbnails");
    made
}

struct Pillow {
    python: String,
    script: PathBuf,
}

impl Pillow {
    /// `thumbnail_pillow.py COMMAND PATH [EXTRA]`.
    fn command(&self, args: &[&str], path: &Path, extra: Option<&Path>) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.script).args(args).arg(path).args(extra);
        c
    }

    fn run(&self, args: &[&str], path: &Path, extra: Option<&Path>) -> bool {
        self.command(args, path, extra)
            .status()
            .is_ok_and(|s| s.success())
    }

    fn json(&self, args: &[&str], path: &Path) -> Option<serde_json::Value> {
        let o = self.command(args, path, None).output().ok()?;
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
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
