//! Who is on the other end of a loopback TCP connection: the kernel lists every socket in
//! `/proc/net/tcp` and `/proc/net/tcp6` with its owner's uid, so the client socket whose
//! local address is the peer's address names the user that opened it. Used to say who a
//! refused request came from when it carried no token.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The uid owning the client socket at `peer`, when `peer` is on loopback and the kernel
/// lists it under `proc_root` (normally `/proc`).
pub fn loopback_uid_in(proc_root: &Path, peer: SocketAddr) -> Option<u32> {
    if !peer.ip().is_loopback() {
        return None;
    }
    let want = encode(peer);
    let file = match peer.ip() {
        IpAddr::V4(_) => "net/tcp",
        IpAddr::V6(_) => "net/tcp6",
    };
    let text = std::fs::read_to_string(proc_root.join(file)).ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        if !local.eq_ignore_ascii_case(&want) {
            return None;
        }
        // rem_address st queues timer retrnsmt uid
        cols.nth(5)?.parse().ok()
    })
}

/// [`loopback_uid_in`] under `/proc`.
pub fn loopback_uid(peer: SocketAddr) -> Option<u32> {
    loopback_uid_in(Path::new("/proc"), peer)
}

/// An address as `/proc/net/tcp*` writes it: the address in host-order 32-bit words (hex),
/// a colon, the port (hex).
fn encode(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_socket_names_its_owner() {
        let dir = std::env::temp_dir().join(format!("qm-peer-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).expect("dir");
        std::fs::write(
            dir.join("net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
             1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 2 1 0 20 4 30 10 -1\n",
        )
        .expect("write");
        let peer: SocketAddr = "127.0.0.1:54321".parse().expect("addr");
        assert_eq!(loopback_uid_in(&dir, peer), Some(65534));
        let other: SocketAddr = "127.0.0.1:54322".parse().expect("addr");
        assert_eq!(loopback_uid_in(&dir, other), None);
        let remote: SocketAddr = "10.0.0.1:54321".parse().expect("addr");
        assert_eq!(loopback_uid_in(&dir, remote), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_real_connection_is_ours() {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let Ok(client) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let Ok(peer) = client.local_addr() else {
            return;
        };
        let me = rustix::process::getuid().as_raw();
        assert_eq!(loopback_uid(peer), Some(me));
    }
}
