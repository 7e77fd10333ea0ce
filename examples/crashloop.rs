//! Kill loop for `scripts/crash-loop.sh` (not part of the server).
//!
//! ```text
//! crashloop BIN REPO WORKDIR [CYCLES] [WORKERS]
//! ```
//! Per cycle: start BIN on WORKDIR/data (127.0.0.1:0), stream admin writes from WORKERS
//! concurrent workers (PUT domains, POST/PUT accounts, PUT phones, PUT members, PUT the
//! domain again), SIGKILL it after a random 50–1500 ms, start it again on the same data
//! folder and read back every write acknowledged with a 2xx in any cycle so far. Prints
//! one line per cycle and a total; exits 1 on any loss, on a store that does not open, or
//! on any non-2xx answer from a live server. The harness is `tests/crashkit/mod.rs`,
//! shared with the 3-cycle test in `tests/crash.rs`.

#[path = "../tests/crashkit/mod.rs"]
mod crashkit;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::RngExt;

fn die(msg: &str) -> ! {
    eprintln!("crashloop: {msg}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        die("usage: crashloop BIN REPO WORKDIR [CYCLES] [WORKERS]");
    }
    let num = |i: usize, default: u32| -> u32 {
        args.get(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| die(&format!("argument {i}: {s:?} is not a number")))
        })
    };
    let (cycles, workers) = (num(4, 25), num(5, 4));
    let abs = |i: usize| {
        std::fs::canonicalize(&args[i]).unwrap_or_else(|e| die(&format!("{}: {e}", args[i])))
    };
    let work = abs(3);
    let setup = crashkit::Setup {
        bin: abs(1),
        repo: abs(2),
        data: work.join("data"),
        log: work.join("server.log"),
    };
    let ledger = Arc::new(Mutex::new(crashkit::Ledger::default()));
    let started = Instant::now();
    let (mut sent, mut acked, mut cut, mut lost_total) = (0, 0, 0, 0);
    println!("cycle  kill-ms  sent  acked  cut  checked  lost");
    for n in 0..cycles {
        let ms = rand::rng().random_range(50..=1500);
        let (c, lost) = match crashkit::cycle(&setup, n, ms, workers, &ledger).await {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "{:>5}  {:>7}  {:>4}  {:>5}  {:>3}  {:>7}  {:>4}",
            n + 1,
            c.kill_after_ms,
            c.streamed.sent,
            c.streamed.acked,
            c.streamed.cut,
            c.checked,
            c.lost
        );
        for l in lost.iter().take(10) {
            println!("  LOST {l}");
        }
        sent += c.streamed.sent;
        acked += c.streamed.acked;
        cut += c.streamed.cut;
        lost_total += c.lost;
    }
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let store = dir_size(&setup.data.join("store"));
    println!(
        "total: {cycles} cycles, {sent} writes sent, {acked} acknowledged (2xx), {cut} cut off by SIGKILL, \
         {} resources checked after the last restart, {lost_total} losses, {} non-2xx answers; \
         store {:.1} MB; {:.0} s",
        l.expect.len(),
        l.rejected,
        store as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    for r in &l.rejected_samples {
        println!("  REJECTED {r}");
    }
    if lost_total > 0 || l.rejected > 0 {
        std::process::exit(1);
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}
