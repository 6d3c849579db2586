//! Network interface counters from `/proc/net/dev`, and their rates. The loopback interface
//! `lo` is skipped: its traffic never leaves the host, and it would count every local byte
//! twice in any sum. Everything else is listed (veth pairs of containers included), as the
//! kernel names it.

use std::time::Instant;

use super::{push, rate};
use crate::metric::Sample;
use crate::rate::Counter;

/// Totals since the interface appeared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Bytes received.
    pub receive_bytes: u64,
    /// Packets received.
    pub receive_packets: u64,
    /// Receive errors.
    pub receive_errors: u64,
    /// Received packets dropped.
    pub receive_drops: u64,
    /// Bytes sent.
    pub transmit_bytes: u64,
    /// Packets sent.
    pub transmit_packets: u64,
    /// Transmit errors.
    pub transmit_errors: u64,
    /// Packets dropped on the way out.
    pub transmit_drops: u64,
}

/// The same, per second over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetRates {
    /// Bytes received per second.
    pub receive_bytes: f64,
    /// Packets received per second.
    pub receive_packets: f64,
    /// Receive errors per second.
    pub receive_errors: f64,
    /// Received packets dropped per second.
    pub receive_drops: f64,
    /// Bytes sent per second.
    pub transmit_bytes: f64,
    /// Packets sent per second.
    pub transmit_packets: f64,
    /// Transmit errors per second.
    pub transmit_errors: f64,
    /// Outgoing packets dropped per second.
    pub transmit_drops: f64,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetInterface {
    /// The interface name (`eth0`, `ens5`).
    pub name: String,
    /// Totals.
    pub counters: NetCounters,
    /// Rates; `None` on the first reading and after a counter reset (an interface re-created
    /// under the same name).
    pub rates: Option<NetRates>,
}

#[derive(Debug)]
struct Known {
    name: String,
    seen: bool,
    counters: [Option<Counter>; 8],
}

/// Interfaces seen, with their last readings.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    known: Vec<Known>,
}

impl NetState {
    /// Reads `/proc/net/dev` text.
    pub(crate) fn update(&mut self, text: &str, now: Instant) -> Vec<NetInterface> {
        let mut out = Vec::new();
        for k in &mut self.known {
            k.seen = false;
        }
        for line in text.lines() {
            let Some((name, values)) = parse_line(line) else {
                continue;
            };
            if name == "lo" {
                continue;
            }
            let known = match self.known.iter().position(|k| k.name == name) {
                Some(i) => &mut self.known[i],
                None => {
                    self.known.push(Known {
                        name: name.to_owned(),
                        seen: false,
                        counters: [None; 8],
                    });
                    let last = self.known.len() - 1;
                    &mut self.known[last]
                }
            };
            if known.seen {
                continue;
            }
            known.seen = true;
            let mut rates = [None; 8];
            for ((slot, r), v) in known.counters.iter_mut().zip(&mut rates).zip(values) {
                *r = rate(slot, Some(v), now);
            }
            let rates = match rates {
                [
                    Some(a),
                    Some(b),
                    Some(c),
                    Some(d),
                    Some(e),
                    Some(f),
                    Some(g),
                    Some(h),
                ] => Some(NetRates {
                    receive_bytes: a,
                    receive_packets: b,
                    receive_errors: c,
                    receive_drops: d,
                    transmit_bytes: e,
                    transmit_packets: f,
                    transmit_errors: g,
                    transmit_drops: h,
                }),
                _ => None,
            };
            let [a, b, c, d, e, f, g, h] = values;
            out.push(NetInterface {
                name: name.to_owned(),
                counters: NetCounters {
                    receive_bytes: a,
                    receive_packets: b,
                    receive_errors: c,
                    receive_drops: d,
                    transmit_bytes: e,
                    transmit_packets: f,
                    transmit_errors: g,
                    transmit_drops: h,
                },
                rates,
            });
        }
        self.known.retain(|k| k.seen);
        out
    }
}

/// `  eth0: rx bytes packets errs drop fifo frame compressed multicast tx bytes packets errs
/// drop ...`; old kernels glue a large first number to the colon. Header lines have no colon.
fn parse_line(line: &str) -> Option<(&str, [u64; 8])> {
    let (name, rest) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let mut v = [0u64; 12];
    for slot in &mut v {
        *slot = fields.next()?.parse().ok()?;
    }
    Some((name, [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]]))
}

impl NetInterface {
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let labels = [("interface", self.name.as_str())];
        let c = &self.counters;
        let totals = [
            c.receive_bytes,
            c.receive_packets,
            c.receive_errors,
            c.receive_drops,
        ]
        .into_iter()
        .chain([
            c.transmit_bytes,
            c.transmit_packets,
            c.transmit_errors,
            c.transmit_drops,
        ]);
        for (desc, v) in TOTALS.iter().zip(totals) {
            push(out, desc, &labels, Some(v as f64));
        }
        if let Some(r) = &self.rates {
            let rates = [
                r.receive_bytes,
                r.receive_packets,
                r.receive_errors,
                r.receive_drops,
            ]
            .into_iter()
            .chain([
                r.transmit_bytes,
                r.transmit_packets,
                r.transmit_errors,
                r.transmit_drops,
            ]);
            for (desc, v) in RATES.iter().zip(rates) {
                push(out, desc, &labels, Some(v));
            }
        }
    }
}

descs! {
    RX_BYTES Counter "qm_host_network_receive_bytes_total"
        "Bytes received.";
    RX_PACKETS Counter "qm_host_network_receive_packets_total"
        "Packets received.";
    RX_ERRORS Counter "qm_host_network_receive_errors_total"
        "Receive errors.";
    RX_DROPS Counter "qm_host_network_receive_drops_total"
        "Received packets dropped.";
    TX_BYTES Counter "qm_host_network_transmit_bytes_total"
        "Bytes sent.";
    TX_PACKETS Counter "qm_host_network_transmit_packets_total"
        "Packets sent.";
    TX_ERRORS Counter "qm_host_network_transmit_errors_total"
        "Transmit errors.";
    TX_DROPS Counter "qm_host_network_transmit_drops_total"
        "Outgoing packets dropped.";
    RX_BYTES_RATE Rate "qm_host_network_receive_bytes_per_second"
        "Bytes received per second over the last interval.";
    RX_PACKETS_RATE Rate "qm_host_network_receive_packets_per_second"
        "Packets received per second over the last interval.";
    RX_ERRORS_RATE Rate "qm_host_network_receive_errors_per_second"
        "Receive errors per second over the last interval.";
    RX_DROPS_RATE Rate "qm_host_network_receive_drops_per_second"
        "Received packets dropped per second over the last interval.";
    TX_BYTES_RATE Rate "qm_host_network_transmit_bytes_per_second"
        "Bytes sent per second over the last interval.";
    TX_PACKETS_RATE Rate "qm_host_network_transmit_packets_per_second"
        "Packets sent per second over the last interval.";
    TX_ERRORS_RATE Rate "qm_host_network_transmit_errors_per_second"
        "Transmit errors per second over the last interval.";
    TX_DROPS_RATE Rate "qm_host_network_transmit_drops_per_second"
        "Outgoing packets dropped per second over the last interval.";
}

static TOTALS: [&crate::metric::Desc; 8] = [
    &RX_BYTES,
    &RX_PACKETS,
    &RX_ERRORS,
    &RX_DROPS,
    &TX_BYTES,
    &TX_PACKETS,
    &TX_ERRORS,
    &TX_DROPS,
];
static RATES: [&crate::metric::Desc; 8] = [
    &RX_BYTES_RATE,
    &RX_PACKETS_RATE,
    &RX_ERRORS_RATE,
    &RX_DROPS_RATE,
    &TX_BYTES_RATE,
    &TX_PACKETS_RATE,
    &TX_ERRORS_RATE,
    &TX_DROPS_RATE,
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEV: &str = "Inter-|   Receive                            |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    \
        lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
        eth0: 1000 10 1 2 0 0 0 0 500 5 3 4 0 0 0 0\n";

    #[test]
    fn counters_and_rates_skip_lo() {
        let t0 = Instant::now();
        let mut s = NetState::default();
        let n = s.update(DEV, t0);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].name, "eth0");
        assert_eq!(n[0].counters.receive_drops, 2);
        assert_eq!(n[0].counters.transmit_errors, 3);
        assert_eq!(n[0].rates, None);
        let later = DEV.replace("eth0: 1000 10", "eth0: 3000 30");
        let n = s.update(&later, t0 + Duration::from_millis(500));
        let r = n[0].rates.unwrap();
        assert_eq!(
            (r.receive_bytes, r.receive_packets, r.transmit_bytes),
            (4000.0, 40.0, 0.0)
        );
        let n = s.update(DEV, t0 + Duration::from_secs(1));
        assert_eq!(n[0].rates, None, "re-created interface");
    }

    #[test]
    fn old_kernels_glue_the_first_number_and_garbage_is_skipped() {
        let mut s = NetState::default();
        let t = "eth1:123456789012 1 0 0 0 0 0 0 9 1 0 0 0 0 0 0\neth2: 1 2 3\neth3: x 1 0 0 0 0 0 0 9 1 0 0\n: 1\n";
        let n = s.update(t, Instant::now());
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].counters.receive_bytes, 123_456_789_012);
        assert!(s.update("", Instant::now()).is_empty());
    }
}
