//! Layer cache benchmark (`bench/layers.sh`): a directory (default: the bookworm stack's rootfs)
//! as a gzip and a zstd layer in a filesystem blob store; then the time of a cache miss (fetch
//! with digest check + unpack + rename), of a hit, and of 8 jobs asking for a new layer at once
//! (one unpack, 7 hits). Also the blob store's put/get throughput and the process's peak RSS.

use slipway_blobstore::{BlobStore, FsBlobStore};
use slipway_host::layers::LayerCache;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn tarball(dir: &Path, out: &Path, zstd: bool) -> u64 {
    let f = std::fs::File::create(out).unwrap();
    let w: Box<dyn Write> = if zstd {
        Box::new(
            zstd::stream::write::Encoder::new(f, 3)
                .unwrap()
                .auto_finish(),
        )
    } else {
        Box::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::default(),
        ))
    };
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    std::fs::metadata(out).unwrap().len()
}

#[tokio::main]
async fn main() {
    let src = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/slipway-test-stacks/bookworm/rootfs"));
    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(work.path().join("blobs")).unwrap());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;

    let gz = work.path().join("layer.tar.gz");
    let t = Instant::now();
    let gz_size = tarball(&src, &gz, false);
    println!(
        "source {}: gzip layer {:.1} MiB (made in {:.1} s)",
        src.display(),
        mib(gz_size),
        t.elapsed().as_secs_f64()
    );
    let zst = work.path().join("layer.tar.zst");
    let zst_size = tarball(&src, &zst, true);
    println!("zstd layer {:.1} MiB", mib(zst_size));

    let t = Instant::now();
    let f = tokio::fs::File::open(&gz).await.unwrap();
    let gz_d = store.put(Box::new(f), None).await.unwrap().digest;
    let put = t.elapsed().as_secs_f64();
    println!(
        "blob put (stream + sha256 + fsync + rename): {:.2} s, {:.0} MiB/s",
        put,
        mib(gz_size) / put
    );
    let t = Instant::now();
    let (_, mut r) = store.get(&gz_d).await.unwrap().unwrap();
    tokio::io::copy(&mut r, &mut tokio::io::sink())
        .await
        .unwrap();
    let get = t.elapsed().as_secs_f64();
    println!("blob get: {:.3} s, {:.0} MiB/s", get, mib(gz_size) / get);
    let f = tokio::fs::File::open(&zst).await.unwrap();
    let zst_d = store.put(Box::new(f), None).await.unwrap().digest;

    let cache =
        Arc::new(LayerCache::open(work.path().join("layers"), Some(store.clone())).unwrap());
    let t = Instant::now();
    cache.resolve(gz_d.as_str()).await.unwrap();
    println!(
        "cache miss, gzip (fetch + verify + unpack + rename): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    cache.resolve(gz_d.as_str()).await.unwrap();
    println!("cache hit: {:.3} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, d) = (cache.clone(), zst_d.clone());
        tasks.push(tokio::spawn(async move { c.resolve(d.as_str()).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    println!(
        "8 jobs at once, new zstd layer: {:.2} s for all",
        t.elapsed().as_secs_f64()
    );
    let st = cache.stats();
    println!(
        "cache stats: {} misses, {} hits, {} failures",
        st.misses, st.hits, st.failures
    );
    println!("peak RSS of this process: {:.0} MiB", peak_rss_mib());
}
