//! What the device accepts, through the `icefold` binary: non-finite inputs refused by name
//! (`run`, `verify`), signed blobs (`keygen`, `sign`, `convert --sign`), and the drift report.
//!
//! The CLI checks need the binary of the same build (`cargo build --release -p icefold-tool`);
//! without it they say so and skip, like the other CLI tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use icefold_tests::cli_binary;
use icefold_tool::io::{self, Array};

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

#[test]
fn keygen_sign_and_convert_sign_make_blobs_only_their_key_loads() {
    let bin = binary_or_skip!();
    let dir = scratch_dir("sign");
    let model = fixture("small_cnn", "model.onnx");
    let key = dir.join("vendor.key");
    let other = dir.join("other.key");
    for k in [&key, &other] {
        let run = icefold(&bin, &[&"keygen", &"-o", k]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private key mode {mode:o}");
    }
    let before = std::fs::read(&key).unwrap();
    let again = icefold(&bin, &[&"keygen", &"-o", &key]);
    assert_eq!(again.code, Some(1), "{}", again.stdout);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // convert --sign with --emit-rust: the module carries the public key.
    let signed = dir.join("signed.icefold");
    let module = dir.join("model.rs");
    let run = icefold(
        &bin,
        &[
            &"convert",
            &model,
            &"-o",
            &signed,
            &"--sign",
            &key,
            &"--emit-rust",
            &module,
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let rs = std::fs::read_to_string(&module).unwrap();
    let public =
        icefold_tool::signing::read_public(&icefold_tool::signing::public_key_path(&key)).unwrap();
    let hex: String = public.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        rs.contains("pub const PUBLIC_KEY: [u8; 32]") && rs.contains(&hex),
        "{rs}"
    );

    // `sign` on an unsigned blob gives the same bytes (Ed25519 signatures are deterministic).
    let unsigned = dir.join("unsigned.icefold");
    let signed2 = dir.join("signed2.icefold");
    assert_eq!(
        icefold(&bin, &[&"convert", &model, &"-o", &unsigned]).code,
        Some(0)
    );
    let run = icefold(&bin, &[&"sign", &unsigned, &"--key", &key, &"-o", &signed2]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let bytes = std::fs::read(&signed).unwrap();
    assert_eq!(bytes, std::fs::read(&signed2).unwrap());
    let plain = std::fs::read(&unsigned).unwrap();
    assert_eq!(
        bytes.len(),
        plain.len() + icefold::format::signature::TRAILER_LEN
    );

    // The device side: the runtime's own checks on what the tool wrote.
    let pk: [u8; 32] = *public;
    let other_pk: [u8; 32] = *icefold_tool::signing::read_public(&other).unwrap();
    let load = |b: &[u8], pk: &[u8; 32]| {
        let a = icefold_tool::lower::blob::AlignedBytes::new(b);
        icefold::Model::new_signed(a.as_slice(), pk).map(|_| ())
    };
    use icefold::LoadError;
    assert_eq!(load(&bytes, &pk), Ok(()));
    assert_eq!(load(&bytes, &other_pk), Err(LoadError::SignatureInvalid));
    assert_eq!(load(&plain, &pk), Err(LoadError::Unsigned));
    assert_eq!(
        load(&bytes[..bytes.len() - 10], &pk),
        Err(LoadError::SignatureTruncated)
    );
    let mut tampered = bytes.clone();
    let weights_byte = plain.len() - 5;
    tampered[weights_byte] ^= 0x40;
    assert_eq!(load(&tampered, &pk), Err(LoadError::SignatureInvalid));

    // inspect verifies as the device does.
    let other_pub = icefold_tool::signing::public_key_path(&other);
    let vendor_pub = icefold_tool::signing::public_key_path(&key);
    let ok = icefold(&bin, &[&"inspect", &signed, &"--public-key", &vendor_pub]);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert!(ok.stdout.contains("signature verifies"), "{}", ok.stdout);
    let bad = icefold(&bin, &[&"inspect", &signed, &"--public-key", &other_pub]);
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    assert!(
        bad.stderr.contains("signature does not verify"),
        "{}",
        bad.stderr
    );

    // Host commands read signed blobs (new_checked: integrity, not origin).
    let out = dir.join("y.npy");
    let input = fixture("small_cnn", "input.npy");
    let run = icefold(
        &bin,
        &[&"run", &signed, &"--input", &input, &"--output", &out],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_flags_drift_on_inputs_scaled_away_from_the_calibration_data() {
    let bin = binary_or_skip!();
    let dir = scratch_dir("drift");
    let (model, calib) = (
        fixture("small_cnn", "model.onnx"),
        fixture("small_cnn", "calib.npy"),
    );
    let input = fixture("small_cnn", "input.npy");
    let blob = dir.join("int8.icefold");
    let run = icefold(
        &bin,
        &[
            &"convert",
            &model,
            &"-o",
            &blob,
            &"--quantize",
            &"int8",
            &"--calib",
            &calib,
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut x3 = io::read_npy(&input).unwrap();
    x3.data.iter_mut().for_each(|v| *v *= 3.0);
    let shifted = dir.join("x3.npy");
    io::write_npy(&shifted, &x3, &[]).unwrap();
    let out = dir.join("y.npy");

    // Test inputs from the calibration data's distribution: nothing flagged.
    let same = icefold(
        &bin,
        &[
            &"run",
            &blob,
            &"--input",
            &input,
            &"--output",
            &out,
            &"--calib",
            &calib,
        ],
    );
    assert_eq!(same.code, Some(0), "{}", same.stderr);
    assert!(same.stdout.contains("values clamped"), "{}", same.stdout);
    assert!(!same.stdout.contains("DRIFT"), "{}", same.stdout);

    // Three times the scale: the input and later layers clamp far more, flagged by name.
    let drift = icefold(
        &bin,
        &[
            &"run",
            &blob,
            &"--input",
            &shifted,
            &"--output",
            &out,
            &"--calib",
            &calib,
        ],
    );
    assert_eq!(drift.code, Some(0), "{}", drift.stderr);
    let flagged: Vec<&str> = drift
        .stdout
        .lines()
        .filter(|l| l.ends_with("DRIFT"))
        .collect();
    assert!(
        flagged.iter().any(|l| l.contains("input (quantize)")) && flagged.len() >= 2,
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("DRIFT: the input"),
        "{}",
        drift.stdout
    );

    // verify --calib gives the same report from the ONNX model.
    let verify = icefold(
        &bin,
        &[&"verify", &model, &"--input", &shifted, &"--calib", &calib],
    );
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
    let tail = |s: &str| s[s.find("values clamped").unwrap()..].to_string();
    assert_eq!(tail(&verify.stdout), tail(&drift.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}
