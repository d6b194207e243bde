//! `hotline bench`: two in-process nodes on loopback, measured beside floors
//! taken in the same run on the same machine: raw Ed25519 signing and
//! verification, raw `fdatasync`, and a raw QUIC request/response over the
//! same TLS setup. Figures are reported as ratios to those floors so that
//! runs on different machines compare.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::control::api::SendRequest;
use crate::demo::{self, DemoError};
use crate::identity::OfficeDir;
use crate::node::tls;
use crate::wire::MessageId;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages in the throughput run.
    pub messages: usize,
    /// Body size in bytes.
    pub size: usize,
    /// Print progress to stderr.
    pub progress: bool,
}

/// Floors measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Floors {
    /// Signatures per second, one core.
    pub ed25519_sign_per_s: f64,
    /// Strict verifications per second, one core.
    pub ed25519_verify_per_s: f64,
    /// Appends of 256 bytes + fdatasync per second.
    pub fdatasync_per_s: f64,
    /// Raw QUIC request/response round trip over the same TLS, p50.
    pub quic_rtt_p50_us: u64,
    /// Raw QUIC request/response rate with 64 in flight.
    pub quic_rate_per_s: f64,
}

/// Ratios to the floors (see docs/performance.md).
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Throughput ÷ (1 / (2 signs + 2 verifies)).
    pub throughput_vs_ed25519: f64,
    /// p50 ÷ (QUIC rtt + 2 fdatasync + 2 signs + 2 verifies).
    pub latency_p50_vs_floor: f64,
    /// p99 ÷ the same floor.
    pub latency_p99_vs_floor: f64,
    /// Throughput ÷ raw QUIC request/response rate.
    pub throughput_vs_quic_rate: f64,
    /// FLASH p99 under ROUTINE load ÷ idle FLASH p99.
    pub flash_p99_loaded_vs_idle: f64,
}

/// The bench's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Messages in the throughput run.
    pub messages: usize,
    /// Body size.
    pub size: usize,
    /// Durable, signed, receipted messages per second.
    pub throughput_per_s: f64,
    /// FLASH send-to-verified-receipt latency, p50, one at a time.
    pub latency_p50_us: u64,
    /// The same, p99.
    pub latency_p99_us: u64,
    /// Latency samples.
    pub latency_samples: u64,
    /// FLASH send-to-receipt p50 while ROUTINE traffic saturates the line.
    pub flash_loaded_p50_us: u64,
    /// The same, p99.
    pub flash_loaded_p99_us: u64,
    /// The floors.
    pub floors: Floors,
    /// The latency floor used for the ratios, µs.
    pub latency_floor_us: f64,
    /// The ratios.
    pub ratios: Ratios,
    /// Cores on this machine.
    pub cores: usize,
}

/// Runs the bench.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, DemoError> {
    let say = |s: &str| {
        if opts.progress {
            eprintln!("{s}");
        }
    };
    let tmp = tempfile::tempdir()?;
    say("measuring floors: Ed25519...");
    let (sign, verify) = ed25519_floor(opts.size);
    say("measuring floors: fdatasync...");
    let fsync = fsync_floor(tmp.path())?;

    say("starting two nodes on loopback...");
    let (a, b) = demo::start_pair(tmp.path(), "washington", "pyongyang").await?;
    say("measuring floors: raw QUIC request/response over the same TLS...");
    let (quic_p50, quic_rate) = quic_floor(tmp.path(), opts.size)
        .await
        .map_err(|e| DemoError::Timeout(format!("raw QUIC floor: {e}")))?;

    let body = "x".repeat(opts.size);
    let samples = 300.min(opts.messages.max(50));
    say(&format!(
        "latency: {samples} FLASH messages one at a time..."
    ));
    let hist = flash_latencies(&a.handle, samples, &body, 10_000).await?;

    say(&format!(
        "throughput: {} ROUTINE messages, 128 in flight...",
        opts.messages
    ));
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(128));
    let mut tasks = Vec::with_capacity(opts.messages);
    for _ in 0..opts.messages {
        let h = a.handle.clone();
        let body = body.clone();
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let r = h
                .send(SendRequest {
                    to: "pyongyang".into(),
                    body,
                    ..Default::default()
                })
                .await;
            drop(permit);
            r
        }));
    }
    let mut ids = Vec::with_capacity(opts.messages);
    for t in tasks {
        let r = t.await.map_err(|e| DemoError::Timeout(e.to_string()))??;
        ids.push(MessageId::parse(&r.id).expect("node id"));
    }
    for id in ids {
        a.handle
            .wait_delivered(id, Duration::from_secs(60))
            .await
            .ok_or_else(|| DemoError::Timeout(format!("{id} not delivered within 60 s")))?;
    }
    let throughput = opts.messages as f64 / start.elapsed().as_secs_f64();

    say(&format!(
        "FLASH under load: {samples} FLASH messages while 64 KiB ROUTINE messages saturate the line..."
    ));
    let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..32 {
        let h = a.handle.clone();
        let stop = stop_load.clone();
        load.push(tokio::spawn(async move {
            let big = "r".repeat(crate::core::MAX_BODY_LEN);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = h
                    .send(SendRequest {
                        to: "pyongyang".into(),
                        precedence: Some("routine".into()),
                        body: big.clone(),
                        ..Default::default()
                    })
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = flash_latencies(&a.handle, samples, &body, 30_000).await?;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    b.stop().await?;
    a.stop().await?;

    let floors = Floors {
        ed25519_sign_per_s: sign,
        ed25519_verify_per_s: verify,
        fdatasync_per_s: fsync,
        quic_rtt_p50_us: quic_p50,
        quic_rate_per_s: quic_rate,
    };
    let ed_floor = 1.0 / (2.0 / sign + 2.0 / verify);
    let latency_floor_us = quic_p50 as f64 + 1e6 * (2.0 / fsync + 2.0 / sign + 2.0 / verify);
    let p50 = hist.value_at_quantile(0.5);
    let p99 = hist.value_at_quantile(0.99);
    Ok(BenchReport {
        messages: opts.messages,
        size: opts.size,
        throughput_per_s: throughput,
        latency_p50_us: p50,
        latency_p99_us: p99,
        latency_samples: hist.len(),
        flash_loaded_p50_us: loaded.value_at_quantile(0.5),
        flash_loaded_p99_us: loaded.value_at_quantile(0.99),
        ratios: Ratios {
            throughput_vs_ed25519: throughput / ed_floor,
            latency_p50_vs_floor: p50 as f64 / latency_floor_us,
            latency_p99_vs_floor: p99 as f64 / latency_floor_us,
            throughput_vs_quic_rate: throughput / quic_rate,
            flash_p99_loaded_vs_idle: loaded.value_at_quantile(0.99) as f64 / p99.max(1) as f64,
        },
        latency_floor_us,
        floors,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    })
}

/// Sends `n` FLASH messages one at a time and records send-to-verified-
/// receipt latency in µs.
async fn flash_latencies(
    handle: &crate::node::NodeHandle,
    n: usize,
    body: &str,
    wait_ms: u64,
) -> Result<Histogram<u64>, DemoError> {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..n {
        let r = handle
            .send(SendRequest {
                to: "pyongyang".into(),
                precedence: Some("flash".into()),
                body: body.to_string(),
                wait: true,
                wait_ms: Some(wait_ms),
                ..Default::default()
            })
            .await?;
        let d = r
            .delivered
            .ok_or_else(|| DemoError::Timeout(format!("no FLASH receipt within {wait_ms} ms")))?;
        hist.record(r.accepted_us + d.elapsed_us.unwrap_or(0)).ok();
    }
    Ok(hist)
}

fn ed25519_floor(size: usize) -> (f64, f64) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let vk = key.verifying_key();
    // About the size of a signed message of `size` body bytes.
    let msg = vec![0x5au8; size + 120];
    let n = 3000;
    let t = Instant::now();
    let mut sig = key.sign(&msg);
    for i in 0..n {
        let mut m = msg.clone();
        m[0] = i as u8;
        sig = key.sign(std::hint::black_box(&m));
    }
    let sign = n as f64 / t.elapsed().as_secs_f64();
    let mut m = msg.clone();
    m[0] = (n - 1) as u8;
    let t = Instant::now();
    for _ in 0..n {
        vk.verify_strict(std::hint::black_box(&m), &sig)
            .expect("verifies");
    }
    let verify = n as f64 / t.elapsed().as_secs_f64();
    (sign, verify)
}

fn fsync_floor(dir: &std::path::Path) -> std::io::Result<f64> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-floor"))?;
    let block = [0u8; 256];
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&block)?;
        f.sync_data()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Echo server and client over the offices' own identities and TLS setup.
async fn quic_floor(
    root: &std::path::Path,
    size: usize,
) -> Result<(u64, f64), Box<dyn std::error::Error + Send + Sync>> {
    let a = OfficeDir::new(root.join("washington")).load()?;
    let b = OfficeDir::new(root.join("pyongyang")).load()?;
    let pin_b = tls::Pin::of(&a.peers[0])?;
    let pin_a = tls::Pin::of(&b.peers[0])?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(256u32.into());
    let transport = Arc::new(transport);
    let server_tls = tls::server_config(a.node_cert.clone(), a.node_key.clone_key(), &[pin_b])?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    server.transport_config(transport.clone());
    let server_ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?;
    let addr = server_ep.local_addr()?;
    let accept_ep = server_ep.clone();
    let server_task = tokio::spawn(async move {
        if let Some(inc) = accept_ep.accept().await {
            if let Ok(conn) = inc.await {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(data) = recv.read_to_end(1 << 20).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    });
                }
            }
        }
    });
    let client_tls = tls::client_config(b.node_cert.clone(), b.node_key.clone_key(), &pin_a)?;
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    client.transport_config(transport);
    let mut client_ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client_ep.set_default_client_config(client);
    let conn = client_ep
        .connect(addr, &a.config.office.server_name())?
        .await?;
    let payload = vec![0x42u8; size];
    async fn round_trip(
        conn: &quinn::Connection,
        payload: &[u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(payload).await?;
        send.finish()?;
        recv.read_to_end(1 << 20).await?;
        Ok(())
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..500 {
        let t = Instant::now();
        round_trip(&conn, &payload).await?;
        hist.record(t.elapsed().as_micros() as u64).ok();
    }
    let n = 4000;
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let conn = conn.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let r = round_trip(&conn, &payload).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    server_ep.close(0u32.into(), b"done");
    server_task.abort();
    Ok((hist.value_at_quantile(0.5), rate))
}
