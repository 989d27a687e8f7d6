//! How fast the direct push's own work can go on this machine, without the engine or the
//! network: a layer tar (read into memory first) hashed, then compressed by the same
//! writers the push uses, on every core, into a sink that hashes what comes out (as the
//! spool and the upload do). scripts/bench runs it on the real-files layer and puts the
//! rates beside the engine's export and the registry's upload (BENCHMARKS.md, the limits
//! table): the push cannot be faster than its slowest stage.
//!
//! `cargo bench --bench compression -- LAYER.tar [THREADS]` prints one JSON line per
//! setting: `{"setting", "seconds", "cpu_seconds", "mb_per_s", "output_bytes"}`, rates in
//! uncompressed MB/s. `cpu_seconds` is the process's user + system time (all threads), so
//! that scripts/bench can add what each stage costs the two cores when they are shared.
//! With no layer (as `cargo test --all-targets` runs it) it checks that every setting's
//! output decompresses to its input.

use std::io::Write as _;
use std::time::Instant;

use ecr_build_push::publish::export::HashingWriter;
use ecr_build_push::publish::gzip::Pool;
use ecr_build_push::publish::Compression;

/// The settings measured: gzip's levels 1 to 7 and 9, so that the default (6) is shown
/// against the cheaper ones (BENCHMARKS.md §7), and zstd's fastest and default.
const SETTINGS: [(&str, u32); 10] = [
    ("gzip", 1),
    ("gzip", 2),
    ("gzip", 3),
    ("gzip", 4),
    ("gzip", 5),
    ("gzip", 6),
    ("gzip", 7),
    ("gzip", 9),
    ("zstd", 1),
    ("zstd", 3),
];

fn main() {
    // `cargo bench` adds `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let threads = args
        .get(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let pool = Pool::new(threads);
    let Some(path) = args.first() else {
        // `cargo test --all-targets` runs this with no layer: check that every setting's
        // output decompresses to its input, so the numbers come from working writers.
        self_check(&pool);
        return;
    };
    let data = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(2);
    });

    // The uncompressed digest (the layer's diff_id) is computed on every new layer.
    let started = Clock::start();
    let mut hash = HashingWriter::new(std::io::sink());
    hash.write_all(&data).expect("a sink takes everything");
    hash.finish();
    report("sha256", &started, data.len(), data.len());

    for (name, level) in SETTINGS {
        let compression = Compression::new(name, Some(level)).expect("a valid setting");
        let started = Clock::start();
        let mut writer = compression
            .writer(&pool, HashingWriter::new(std::io::sink()))
            .expect("the compressor starts");
        // The export hands the compressor pieces of this size (export::Feeder).
        for piece in data.chunks(512 << 10) {
            writer.write_all(piece).expect("compression of memory");
        }
        let (out, summary) = writer.finish().expect("compression of memory");
        out.finish();
        let output = usize::try_from(summary.output_bytes).unwrap_or(usize::MAX);
        report(
            &format!("{name} {level} ({threads} threads)"),
            &started,
            data.len(),
            output,
        );
    }
}

/// Every setting round-trips 4 MiB of text and noise through its decoder.
fn self_check(pool: &Pool) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut data = Vec::with_capacity(4 << 20);
    while data.len() < 4 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
        data.extend_from_slice(format!("line {} of a log\n", state % 1000).as_bytes());
    }
    for (name, level) in SETTINGS {
        let compression = Compression::new(name, Some(level)).expect("a valid setting");
        let packed = compression
            .compress_bytes(pool, &data)
            .expect("compression of memory");
        let mut back = Vec::new();
        if name == "gzip" {
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut back)
                .expect("valid gzip");
        } else {
            back = zstd::decode_all(&packed[..]).expect("valid zstd");
        }
        assert!(back == data, "{name} {level} does not round-trip");
        assert!(packed.len() < data.len(), "{name} {level} did not compress");
    }
    println!("every setting round-trips (give a layer tar to measure)");
}

/// Wall time and the process's CPU time (every thread's), from a start.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }
}

/// User + system time of this process so far, from `/proc/self/stat` (fields 14 and 15,
/// in clock ticks of 1/100 s, Linux's `USER_HZ`); 0 where there is no procfs.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces; the fields after its `)` are space-separated.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let seconds = ticks as f64 / 100.0;
    seconds
}

#[allow(clippy::cast_precision_loss)]
fn report(setting: &str, started: &Clock, input: usize, output: usize) {
    let seconds = started.wall.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "setting": setting,
            "seconds": seconds,
            "cpu_seconds": process_cpu_seconds() - started.cpu,
            "mb_per_s": input as f64 / 1e6 / seconds,
            "output_bytes": output,
        })
    );
}
