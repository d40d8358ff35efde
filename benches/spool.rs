//! Spool write and drain rates: `cargo bench --bench spool` (SPOOL_EVENTS, SPOOL_BYTES set the
//! count and size of the events; 1,000,000 of 1,000 bytes by default, about 1 GB of disk).

use std::time::Instant;

use defender_dsm::output::spool::Spool;

mod common;
use common::setting;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let (n, size) = (
        setting("SPOOL_EVENTS", 1_000_000),
        setting("SPOOL_BYTES", 1000),
    );
    let dir = std::env::temp_dir().join(format!("dsm-spool-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut spool, _) = Spool::open(&dir, u64::MAX, 64 << 20).expect("open");
    let event = vec![b'e'; size];
    let t = Instant::now();
    for i in 0..n {
        spool.append(&event).expect("append");
        // Group commit: an input acknowledges a batch once it is durable.
        if i % 1000 == 999 {
            spool.sync().expect("sync");
        }
    }
    spool.sync().expect("sync");
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut drained = 0;
    while spool.pending() > 0 {
        let batch = spool.peek(1000, usize::MAX).expect("peek");
        drained += batch.len();
        let next = batch.last().map_or(0, |(seq, _)| seq + 1);
        spool.ack(next).expect("ack");
    }
    let drain = t.elapsed().as_secs_f64();
    assert_eq!(drained, n);
    let mb = (n * (size + 8)) as f64 / 1e6;
    println!("spool: {n} events of {size} bytes ({mb:.0} MB)");
    println!(
        "write (fsync every 1,000) {:>10.0} events/s {:>8.1} MB/s",
        n as f64 / write,
        mb / write
    );
    println!(
        "drain (peek 1,000, ack)   {:>10.0} events/s {:>8.1} MB/s",
        n as f64 / drain,
        mb / drain
    );
    println!("peak RSS {} MB", rss_kb() / 1024);
    let _ = std::fs::remove_dir_all(dir);
}
