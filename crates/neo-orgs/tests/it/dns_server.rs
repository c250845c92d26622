//! DNS servers for the domain verification tests, on free loopback ports: an in-process
//! hickory server (UDP and TCP on one port) serving the zone `example.` whose TXT records a
//! test adds as it goes, and raw UDP responders that never answer or answer bytes that are
//! not DNS.

use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use neo_orgs::{DnsConfig, HickoryResolver};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// An authoritative server for `example.`, running until dropped.
pub(crate) struct ZoneServer {
    zone: Arc<InMemoryZoneHandler>,
    serial: AtomicU32,
    pub(crate) address: SocketAddr,
    _server: Server<Catalog>,
}

impl ZoneServer {
    pub(crate) async fn start() -> ZoneServer {
        let origin = Name::from_ascii("example.").unwrap();
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.example.").unwrap(),
            Name::from_ascii("admin.example.").unwrap(),
            1,
            3600,
            600,
            86_400,
            0,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let (udp, tcp) = udp_and_tcp_on_one_port().await;
        let address = udp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        ZoneServer {
            zone,
            serial: AtomicU32::new(2),
            address,
            _server: server,
        }
    }

    /// Adds a TXT record at `name` (e.g. `acme.example`) holding `text`.
    pub(crate) async fn add_txt(&self, name: &str, text: &str) {
        let record = Record::from_rdata(
            Name::from_ascii(format!("{name}.")).unwrap(),
            0,
            RData::TXT(TXT::new(vec![text.to_owned()])),
        );
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        assert!(self.zone.upsert(record, serial).await);
    }

    /// A resolver asking only this server.
    pub(crate) fn resolver(&self, config: DnsConfig) -> HickoryResolver {
        resolver_at(self.address, config)
    }
}

pub(crate) fn resolver_at(address: SocketAddr, mut config: DnsConfig) -> HickoryResolver {
    config.nameservers = vec![address];
    HickoryResolver::new(config).unwrap()
}

/// How a raw responder answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Misbehaving {
    /// Reads queries, never answers.
    Silent,
    /// Answers each query with its id and a header claiming an answer, then bytes that are
    /// not a record.
    Garbage,
}

/// A UDP responder on a free loopback port that misbehaves, until the test ends.
pub(crate) async fn misbehaving(how: Misbehaving) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0_u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if n < 12 {
                continue;
            }
            if let Misbehaving::Garbage = how {
                let mut answer = vec![buf[0], buf[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
                answer.extend_from_slice(&[0xff; 23]);
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    address
}

/// A UDP socket and a TCP listener on the same free loopback port: the UDP port is free,
/// but another process may hold its number in TCP, so a few fresh ports are tried.
async fn udp_and_tcp_on_one_port() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        match tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
            Ok(tcp) => return (udp, tcp),
            Err(error) => last = Some(error),
        }
    }
    panic!("no loopback port was free in both UDP and TCP: {last:?}");
}
