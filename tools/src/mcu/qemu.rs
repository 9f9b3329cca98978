//! Running a firmware image under QEMU.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::decode_defmt;
use super::McuOptions;

/// Runs `elf` under QEMU with instruction counting and returns what it printed; `plugin` is a
/// `-plugin` argument (the cycle plugin, see `cycles`).
pub fn run_qemu(elf: &Path, opts: &McuOptions, plugin: Option<&OsStr>) -> Result<String> {
    let t = opts.target;
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", t.machine(), "-cpu", t.cpu()])
        // No display, serial or monitor: with stdin closed (CI) `-nographic` fails.
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        // Each instruction advances virtual time by exactly 1024 ns: the firmware's timer counts
        // instructions (examples/firmware/src/board.rs).
        .args(["-icount", "shift=10,align=off,sleep=off"])
        .args(plugin.iter().flat_map(|p| [OsStr::new("-plugin"), p]))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.verbose {
        eprintln!("running {cmd:?}");
    }
    let mut child = cmd.spawn().context("cannot start qemu-system-arm")?;
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    let mut stderr = child.stderr.take().context("no QEMU stderr")?;
    // Bytes, not text: defmt frames are binary.
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break Some(status);
        }
        if start.elapsed() > opts.timeout {
            // Our own child, by handle: a fault without handler or a hang spins forever.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let raw = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let out = if opts.defmt {
        decode_defmt(elf, &raw)?
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    match status {
        None => bail!(
            "QEMU ({}) did not finish within {:?}; output so far:\n{}",
            t.machine(),
            opts.timeout,
            tail(&out)
        ),
        Some(s) if !s.success() => {
            let reported = out
                .lines()
                .find(|l| l.starts_with("ERR") || l.contains("panicked"))
                .unwrap_or("");
            bail!(
                "the firmware failed on {} ({}): {reported}\nQEMU exit: {s}\nstdout:\n{}\nstderr:\n{}",
                t,
                t.machine(),
                tail(&out),
                tail(&err)
            )
        }
        Some(_) => Ok(out),
    }
}
