//! The partition injector against the real kernel: iptables rules between two
//! loopback addresses cut node-to-node traffic in both directions while a
//! client on 127.0.0.1 still gets through, and every rule is gone after
//! mending and after the firewall is dropped. Needs root and iptables (CI has
//! both); without them this test fails, it does not skip.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use causeway_torture::partition::Firewall;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// Connects from `src` (an ip) to `dst`; true when a byte comes back.
async fn reaches(src: &str, dst: SocketAddr) -> bool {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{src}:0").parse().expect("src"))
        .expect("bind source");
    let attempt = async {
        let mut s = socket.connect(dst).await.ok()?;
        s.write_all(b"?").await.ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        Some(b[0])
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(700), attempt).await,
        Ok(Some(b'!'))
    )
}

async fn echo_server(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0"))
        .await
        .expect("bind listener");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"!").await;
                }
            });
        }
    });
    addr
}

fn rules_tagged(tag: &str) -> usize {
    let out = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
        .expect("iptables must be installed (and this test run as root)");
    assert!(
        out.status.success(),
        "iptables -S failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("--comment {tag}")))
        .count()
}

#[tokio::test]
async fn a_cut_link_drops_node_traffic_both_ways_but_not_clients() {
    // Addresses of our own, away from a campaign's 127.0.0.x nodes.
    let net = 20 + std::process::id() % 200;
    let (a_ip, b_ip) = (format!("127.77.{net}.2"), format!("127.77.{net}.3"));
    let tag = format!("causeway-torture-test-{}", std::process::id());
    let a = echo_server(&a_ip).await;
    let b = echo_server(&b_ip).await;
    assert!(
        reaches(&a_ip, b).await && reaches(&b_ip, a).await,
        "loopback works before the cut"
    );

    let fw =
        Firewall::with_tag("iptables", &tag).expect("iptables must be installed (run as root)");
    fw.cut(&a.to_string(), &b.to_string()).expect("cut");
    assert_eq!(rules_tagged(&tag), 2);
    assert!(!reaches(&a_ip, b).await, "a -> b still flows");
    assert!(!reaches(&b_ip, a).await, "b -> a still flows");
    assert!(
        reaches("127.0.0.1", a).await && reaches("127.0.0.1", b).await,
        "clients are cut too"
    );

    // Two overlapping partitions over the same link: it heals when both end.
    fw.cut(&a.to_string(), &b.to_string()).expect("cut again");
    fw.mend(&a.to_string(), &b.to_string()).expect("mend once");
    assert!(
        !reaches(&a_ip, b).await,
        "healed while another partition still cuts the link"
    );
    fw.mend(&a.to_string(), &b.to_string()).expect("mend twice");
    assert!(
        reaches(&a_ip, b).await && reaches(&b_ip, a).await,
        "not healed"
    );
    assert_eq!(rules_tagged(&tag), 0);

    // Dropping the firewall removes what it still holds.
    fw.cut(&a.to_string(), &b.to_string()).expect("cut");
    drop(fw);
    assert_eq!(rules_tagged(&tag), 0);
    assert!(reaches(&a_ip, b).await);

    // Rules left by a run that died are removed by the next one.
    let leftover = Firewall::with_tag("iptables", &tag).expect("firewall");
    leftover.cut(&a.to_string(), &b.to_string()).expect("cut");
    std::mem::forget(leftover);
    assert_eq!(rules_tagged(&tag), 2);
    let fresh = Firewall::with_tag("iptables", &tag).expect("firewall");
    assert_eq!(rules_tagged(&tag), 0);
    assert_eq!(fresh.active_rules(), 0);
}
