//! What the device accepts, through the `icefold` binary: non-finite inputs refused by name
//! (`run`, `verify`), signed blobs (`keygen`, `sign`, `convert --sign`), and the drift report.
//!
//! The CLI checks need the binary of the same build (`cargo build --release -p icefold-tool`);
//! without it they say so and skip, like the other CLI tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use icefold_tool::io::{self, Array};

/// The `icefold` binary of the same build as this test, if it has been built.
fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/trust-<hash> -> target/<profile>/icefold
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("icefold{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("icefold-trust-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .join(file)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn icefold(bin: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let out = Command::new(bin)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

macro_rules! binary_or_skip {
    () => {
        match cli_binary() {
            Some(bin) => bin,
            None => {
                eprintln!(
                    "note: the icefold binary is not built next to this test; CLI checks \
                     skipped (cargo build --release -p icefold-tool first)"
                );
                return;
            }
        }
    };
}

#[test]
fn run_and_verify_refuse_a_nan_input_by_sample_and_position_unless_allowed() {
    let bin = binary_or_skip!();
    let dir = scratch_dir("nonfinite");
    let model = fixture("small_cnn", "model.onnx");
    let mut x = io::read_npy(&fixture("small_cnn", "input.npy")).unwrap();
    assert!(x.samples() >= 3 && x.shape.len() == 4, "{:?}", x.shape);
    // Sample 2, element [1, 2, 3] in the file's own [C, H, W] layout.
    let [_, _, h, w] = x.shape[..] else {
        unreachable!()
    };
    let n = x.sample_len();
    x.data[2 * n + (h * w) + 2 * w + 3] = f32::NAN;
    x.data[2 * n + (h * w) + 2 * w + 4] = f32::INFINITY; // later: not the one named
    let bad = dir.join("bad.npy");
    io::write_npy(&bad, &x, &[]).unwrap();
    let blob = dir.join("m.icefold");
    let out = dir.join("y.npy");
    let convert = icefold(&bin, &[&"convert", &model, &"-o", &blob]);
    assert_eq!(convert.code, Some(0), "{}", convert.stderr);

    let run = icefold(&bin, &[&"run", &blob, &"--input", &bad, &"--output", &out]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("sample 2, element [1, 2, 3]") && run.stderr.contains("is NaN"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--allow-nonfinite"), "{}", run.stderr);
    assert!(!out.exists(), "no output written on refusal");

    let verify = icefold(&bin, &[&"verify", &model, &"--input", &bad]);
    assert_eq!(verify.code, Some(1), "{}", verify.stderr);
    assert!(
        verify.stderr.contains("sample 2, element [1, 2, 3]"),
        "{}",
        verify.stderr
    );

    // `mcu` checks on the host before building any firmware.
    let mcu = icefold(
        &bin,
        &[&"mcu", &blob, &"--input", &bad, &"--target", &"cortex-m4"],
    );
    assert_eq!(mcu.code, Some(1), "{}", mcu.stderr);
    assert!(
        mcu.stderr.contains("sample 2, element [1, 2, 3]"),
        "{}",
        mcu.stderr
    );

    let allowed = icefold(
        &bin,
        &[
            &"run",
            &blob,
            &"--input",
            &bad,
            &"--output",
            &out,
            &"--allow-nonfinite",
        ],
    );
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    let y = io::read_npy(&out).unwrap();
    assert_eq!(y.samples(), x.samples());

    // The finite samples give what they give on their own.
    let good = Array {
        shape: [2]
            .into_iter()
            .chain(x.shape[1..].iter().copied())
            .collect(),
        data: x.data[..2 * n].to_vec(),
    };
    let good_path = dir.join("good.npy");
    io::write_npy(&good_path, &good, &[]).unwrap();
    let out_good = dir.join("y_good.npy");
    let run = icefold(
        &bin,
        &[
            &"run",
            &blob,
            &"--input",
            &good_path,
            &"--output",
            &out_good,
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let y_good = io::read_npy(&out_good).unwrap();
    assert_eq!(y_good.data[..], y.data[..y_good.data.len()]);
    let _ = std::fs::remove_dir_all(&dir);
}
