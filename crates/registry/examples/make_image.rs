//! Writes a test image for benchmarks: `make_image OUT_DIR SIZE_MB [LAYERS] [--docker FILE]`.
//! busybox rootfs + LAYERS app layers (default 5) of incompressible data totalling SIZE_MB,
//! served by `httpd -f -p 8080 -h /www`. With `--docker FILE`, also a `docker save` archive.
//! `SALT=x` changes the top layer only (a new version of the same image).

use slipway_registry::testimage::{ImageBuilder, LayerBuilder, busybox_layer};

/// The top layer's page carries `$SALT`, so two images differ in that layer only.
fn index(i: usize, layers: usize) -> String {
    let salt = std::env::var("SALT").unwrap_or_default();
    if i + 1 == layers {
        format!("layer {i} {salt}\n")
    } else {
        format!("layer {i}\n")
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .expect("usage: make_image OUT_DIR SIZE_MB [LAYERS] [--docker FILE]");
    let size_mb: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let layers: usize = args
        .get(3)
        .filter(|s| !s.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let mut img = ImageBuilder::new()
        .layer(busybox_layer()?)
        .cmd(&["httpd", "-f", "-p", "8080", "-h", "/www"])
        .env("PATH=/bin");
    // xorshift: fast, deterministic, incompressible enough for a transfer benchmark.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let per = size_mb * 1_000_000 / layers.max(1);
    for i in 0..layers {
        let mut data = vec![0u8; per];
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        img = img.layer(
            LayerBuilder::new()
                .dir("www")
                .file(&format!("www/blob{i}.bin"), 0o644, &data)
                .file("www/index.html", 0o644, index(i, layers).as_bytes())
                .finish(),
        );
    }
    img.write_oci(std::path::Path::new(out))?;
    if let Some(i) = args.iter().position(|a| a == "--docker") {
        img.write_docker_archive(std::path::Path::new(&args[i + 1]), "bench:latest")?;
    }
    Ok(())
}
