//! Measures what sled (the store behind the Raft log) does with the space of purged entries:
//! writes big or many entries to a `raft_log` tree as the log store does (one flushed batch per
//! append), purges all but the last few (one batch, as a Raft purge), then keeps writing small
//! entries and prints the data directory's size over time.
//!
//! `cargo run --example sled_space -- <entries> <entry-bytes> <seconds-to-watch>`
//!
//! With `steady <entry-bytes> <kept> <seconds>` it instead appends without pause and purges all
//! but the last `kept` entries every `kept` appends (a log compacted by snapshots), to show
//! whether sled reuses the space it does not give back.

use std::time::{Duration, Instant};

// The same measure the adversarial tests and the churn bench use; this example uses part of it.
#[allow(dead_code)]
#[path = "../tests/common/footprint.rs"]
mod footprint;

use footprint::dir_bytes;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn steady(size: usize, kept: u64, seconds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let log = db.open_tree("raft_log")?;
    let value = vec![b'x'; size];
    let started = Instant::now();
    let mut next_print = Duration::ZERO;
    let mut i: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        log.insert(i.to_be_bytes(), value.as_slice())?;
        db.flush()?;
        i += 1;
        if i.is_multiple_of(kept) && i > kept {
            let mut batch = sled::Batch::default();
            for key in log.range(..(i - kept).to_be_bytes()).keys() {
                batch.remove(key?);
            }
            log.apply_batch(batch)?;
            db.flush()?;
        }
        if started.elapsed() >= next_print {
            println!(
                "t={:>3}s: {i} appended ({:.1} MiB), {} live, {:.1} MiB on disk",
                started.elapsed().as_secs(),
                mib(i * size as u64),
                log.len(),
                mib(dir_bytes(dir.path()))
            );
            next_print += Duration::from_secs(10);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("steady") {
        let args: Vec<u64> = std::env::args()
            .skip(2)
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        let [size, kept, seconds] = args[..] else {
            return Err("steady <entry-bytes> <kept> <seconds>".into());
        };
        return steady(size as usize, kept, seconds);
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (count, size, watch) = match args.as_slice() {
        [c, s, w] => (*c, *s as usize, *w),
        _ => (30, 15 << 20, 60),
    };
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let log = db.open_tree("raft_log")?;
    let started = Instant::now();
    let value = vec![b'x'; size];
    for i in 0..count {
        log.insert(i.to_be_bytes(), value.as_slice())?;
        db.flush()?;
    }
    println!(
        "wrote {count} x {size} B in {:.1}s: {:.1} MiB on disk",
        started.elapsed().as_secs_f64(),
        mib(dir_bytes(dir.path()))
    );
    let mut batch = sled::Batch::default();
    for key in log.range(..(count - 2).to_be_bytes()).keys() {
        batch.remove(key?);
    }
    log.apply_batch(batch)?;
    db.flush()?;
    println!(
        "purged all but 2: {:.1} MiB on disk",
        mib(dir_bytes(dir.path()))
    );
    let small = vec![b'y'; 512];
    let watch_start = Instant::now();
    let mut next_print = Duration::ZERO;
    let mut i = count;
    while watch_start.elapsed() < Duration::from_secs(watch) {
        // A trickle of small appends and purges, like an idle node's heartbeats of commands.
        log.insert(i.to_be_bytes(), small.as_slice())?;
        log.remove((i - 2).to_be_bytes())?;
        db.flush()?;
        i += 1;
        if watch_start.elapsed() >= next_print {
            println!(
                "t={:>3}s: {:.1} MiB on disk",
                watch_start.elapsed().as_secs(),
                mib(dir_bytes(dir.path()))
            );
            next_print += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(log);
    drop(db);
    let db = sled::open(dir.path())?;
    db.flush()?;
    println!(
        "after reopen: {:.1} MiB on disk",
        mib(dir_bytes(dir.path()))
    );
    Ok(())
}
