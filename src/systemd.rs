//! systemd's service notification protocol: `READY=1`, `RELOADING=1`,
//! `STOPPING=1` and the watchdog's `WATCHDOG=1` pings, sent as datagrams to
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`).
//! Nothing happens when systemd is not listening.
//! Protocol: sd_notify(3) and sd_watchdog_enabled(3).

use std::ffi::OsStr;
use std::time::Duration;

/// Pings never come more often than this, whatever `WATCHDOG_USEC` says.
const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(10);

/// Tells systemd (`Type=notify`) about our state, if it is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&path, state) {
        log::debug!("sd_notify failed: {error}");
    }
}

fn send(path: &OsStr, state: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &address)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`, if systemd asks for pings: half of
/// `WATCHDOG_USEC` (as sd_watchdog_enabled(3) advises), when
/// `WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(&usec, pid.as_deref(), std::process::id())
}

fn interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|pid| pid.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec: u64 = usec.parse().ok().filter(|usec| *usec > 0)?;
    Some((Duration::from_micros(usec) / 2).max(MIN_WATCHDOG_INTERVAL))
}

/// Pings the watchdog every `interval` for as long as the event loop runs
/// it: a loop that is stuck stops pinging, and systemd restarts the node.
pub async fn watchdog(interval: Duration) {
    loop {
        smol::Timer::after(interval).await;
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        assert_eq!(interval_from("30000000", None, 7), Some(Duration::from_secs(15)));
        assert_eq!(interval_from("200000", Some("7"), 7), Some(Duration::from_millis(100)));
        assert_eq!(interval_from("200000", Some("8"), 7), None);
        assert_eq!(interval_from("0", None, 7), None);
        assert_eq!(interval_from("soon", None, 7), None);
        assert_eq!(interval_from("1", None, 7), Some(MIN_WATCHDOG_INTERVAL));
    }
}
