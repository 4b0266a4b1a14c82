//! The system's default name server: the first `nameserver` line of `/etc/resolv.conf`.
//!
//! Only that line is read, simply: comments (`#`, `;`) and every other option are skipped,
//! and the file is read up to [`MAX_RESOLV_CONF_BYTES`], because it is outside input like any
//! other and a resolver never needs more than its first lines.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where the system's resolver configuration lives.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How much of the file is read; real ones are a few hundred bytes.
pub const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;

/// The first `nameserver` of a resolv.conf text, on port 53; `None` when there is none.
/// A zone suffix (`fe80::1%eth0`) is dropped: the scope cannot be named portably.
pub fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            return None;
        }
        let addr = words.next()?;
        let addr = addr.split('%').next().unwrap_or(addr);
        addr.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Reads `path` (bounded) and returns its first name server, or why there is none.
pub fn read_first_nameserver(path: &Path) -> Result<SocketAddr, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_RESOLV_CONF_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    first_nameserver(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
        format!(
            "{} names no nameserver; set the probe's server",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nameserver_wins() {
        let text = "# generated\nsearch example.com\noptions edns0\n\
                    nameserver 10.0.0.2 # primary\nnameserver 10.0.0.3\n";
        assert_eq!(first_nameserver(text), Some("10.0.0.2:53".parse().unwrap()));
    }

    #[test]
    fn comments_garbage_and_ipv6_are_handled() {
        assert_eq!(first_nameserver(""), None);
        assert_eq!(first_nameserver("# nameserver 1.1.1.1\n"), None);
        assert_eq!(first_nameserver("; nameserver 1.1.1.1\n"), None);
        assert_eq!(first_nameserver("nameserver\nnameserver bogus\n"), None);
        assert_eq!(
            first_nameserver("nameserverx 1.1.1.1\n  nameserver\t::1\n"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(
            first_nameserver("nameserver fe80::1%eth0\n"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(
            first_nameserver("nameserver 127.0.0.53\r\n"),
            Some("127.0.0.53:53".parse().unwrap())
        );
    }

    #[test]
    fn reading_is_bounded_and_explains_failures() {
        let dir = std::env::temp_dir().join(format!("pushprobe-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        // The nameserver line sits past the read limit: it is not seen.
        let mut text = "#".repeat(MAX_RESOLV_CONF_BYTES as usize);
        text.push_str("\nnameserver 10.0.0.1\n");
        std::fs::write(&path, &text).unwrap();
        let e = read_first_nameserver(&path).unwrap_err();
        assert!(e.contains("names no nameserver"), "{e}");
        std::fs::write(&path, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(
            read_first_nameserver(&path),
            Ok("10.0.0.1:53".parse().unwrap())
        );
        let e = read_first_nameserver(&dir.join("missing")).unwrap_err();
        assert!(e.starts_with("cannot read "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
