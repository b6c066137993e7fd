//! Makes glibc's allocator give big freed blocks back to the system, for a
//! server whose resident memory should stay small. It knows nothing of Matrix.
//!
//! Each password hash (argon2id, see `credentials.rs`) allocates one 12 MiB
//! block and frees it. glibc serves a block that big with its own `mmap` and
//! unmaps it on free, but that free also raises glibc's *dynamic* mmap
//! threshold to 12 MiB, so every later hash is carved from the heap instead,
//! and the freed heap stays resident: the benchmark measured 30 MiB RSS after
//! ten registrations instead of 8. Pinning the thresholds
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, read by glibc at its
//! first allocation) turns the dynamic adjustment off (12 MiB after the load).
//! The other fixes were worse or barred: one argon2 block kept for the
//! process's life stays resident (12 MiB more after the first login);
//! `mallopt`/`malloc_trim` need unsafe code, which this crate forbids. So
//! `hearth serve` re-executes itself, once, with the variables set (the
//! process ID stays the same). musl, the static release target, always unmaps
//! big blocks, so this is compiled for glibc only. The systemd unit may
//! set the variables itself, which skips the re-execution.

/// Blocks from 1 MiB up get their own mapping, returned on free: argon2's
/// 12 MiB always, a request's buffers (JSON bodies, a /sync answer) not. The
/// glibc default of 128 KiB would give medium buffers an mmap (and fresh
/// page faults) each time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: &str = "1048576";

/// The heap is given back once 2 MiB are free at its top (twice the mmap
/// threshold, as glibc's own dynamic rule would set it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: &str = "2097152";

/// The variables glibc reads; either one set fixes both thresholds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_VARIABLE: &str = "MALLOC_MMAP_THRESHOLD_";
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_VARIABLE: &str = "MALLOC_TRIM_THRESHOLD_";

/// Re-executes this program with the thresholds pinned, unless one is set
/// already. Returns (only) if that is not needed or not possible.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn pin_mmap_threshold() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(MMAP_THRESHOLD_VARIABLE).is_some()
        || std::env::var_os(TRIM_THRESHOLD_VARIABLE).is_some()
    {
        return;
    }
    let Ok(program) = std::env::current_exe() else { return };
    let mut arguments = std::env::args_os();
    let name = arguments.next().unwrap_or_else(|| program.clone().into_os_string());
    let error = std::process::Command::new(&program)
        .arg0(name)
        .args(arguments)
        .env(MMAP_THRESHOLD_VARIABLE, MMAP_THRESHOLD_BYTES)
        .env(TRIM_THRESHOLD_VARIABLE, TRIM_THRESHOLD_BYTES)
        .exec();
    log::warn!(
        "could not re-execute with {MMAP_THRESHOLD_VARIABLE} set ({error}); freed memory may stay resident"
    );
}

/// Other C libraries return big freed blocks already.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn pin_mmap_threshold() {}
