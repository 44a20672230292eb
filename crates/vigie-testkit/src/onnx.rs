//! Where the tests find ONNX Runtime.

use std::path::PathBuf;
use std::process::Command;

/// `ORT_DYLIB_PATH`, else the `libonnxruntime` of the installed onnxruntime
/// wheel (scripts/setup installs it). Panics, saying so, when neither exists.
pub fn ort_dylib() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return p.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the onnxruntime wheel is not installed (scripts/setup installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}
