//! Makes glibc's allocator give big freed blocks back to the system, for a
//! server whose resident memory should stay small. It knows nothing of Matrix.
//!
//! Each password hash (argon2id, see `credentials.rs`) allocates one 12 MiB
//! block and frees it. glibc serves a block that big with its own `mmap` and
//! unmaps it on free, but that free also raises glibc's *dynamic* mmap
//! threshold to 12 MiB, so every later hash is carved from the heap instead,
//! and the freed heap stays resident: the benchmark measured 30 MiB RSS after
//! ten registrations instead of 8. Pinning the threshold at its default
//! (`MALLOC_MMAP_THRESHOLD_`, read by glibc at its first allocation) turns the
//! dynamic adjustment off. The other fixes were worse or barred: one argon2
//! block kept for the process's life stays resident (12 MiB more after the
//! first login); `mallopt`/`malloc_trim` need unsafe code, which this crate
//! forbids. So `hearth serve` re-executes itself, once, with the variable set
//! (the process ID stays the same). musl, the static release target, always
//! unmaps big blocks, so this is compiled for glibc only. The systemd unit may
//! set the variable itself, which skips the re-execution.

/// glibc's default mmap threshold (128 KiB), pinned so it no longer grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: &str = "131072";

/// The variable glibc reads; set, the threshold is fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_VARIABLE: &str = "MALLOC_MMAP_THRESHOLD_";

/// Re-executes this program with the mmap threshold pinned, unless it is set
/// already. Returns (only) if that is not needed or not possible.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn pin_mmap_threshold() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(MMAP_THRESHOLD_VARIABLE).is_some() {
        return;
    }
    let Ok(program) = std::env::current_exe() else { return };
    let mut arguments = std::env::args_os();
    let name = arguments.next().unwrap_or_else(|| program.clone().into_os_string());
    let error = std::process::Command::new(&program)
        .arg0(name)
        .args(arguments)
        .env(MMAP_THRESHOLD_VARIABLE, MMAP_THRESHOLD_BYTES)
        .exec();
    log::warn!(
        "could not re-execute with {MMAP_THRESHOLD_VARIABLE} set ({error}); freed memory may stay resident"
    );
}

/// Other C libraries return big freed blocks already.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn pin_mmap_threshold() {}
