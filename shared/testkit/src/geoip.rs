//! A writer of small MaxMind DB (mmdb) country databases, so GeoIP tests need no download and
//! no licensed data file.
//!
//! The layout follows the MaxMind DB format 2.0 (<https://maxmind.github.io/MaxMind-DB/>):
//! a binary search tree over the bits of an IPv6 address, 16 zero bytes, a data section, then
//! `\xAB\xCD\xEFMaxMind.com` and a metadata map. As in MaxMind's own databases, IPv4 lives
//! under `::/96` and the IPv4-mapped range `::ffff:0:0/96` leads to that same subtree, so an
//! address a dual-stack socket reports as `::ffff:192.0.2.1` finds 192.0.2.1's country.
//! Other IPv4 embeddings (6to4, Teredo) are not aliased: nothing here produces them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv6Net};

/// The metadata's `database_type`: a reader can tell our file from a real one.
pub const DATABASE_TYPE: &str = "Kurz-Test-Country";

/// 24-bit records are the smallest the format allows, and they reach 16 million nodes and
/// data bytes: far more than any test's handful of networks.
const RECORD_SIZE: u16 = 24;
const MAX_RECORD: usize = (1 << RECORD_SIZE) - 1;
const DATA_SECTION_SEPARATOR: [u8; 16] = [0; 16];
const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// Where IPv4 is mapped (`::ffff:0:0/96`), a prefix that leads into the IPv4 subtree.
const IPV4_MAPPED: (u128, u8) = (0xffff_0000_0000, 96);

/// Writes a country database answering `iso_code` for each network; every other address is
/// not found. Networks may be IPv4 or IPv6, given as CIDR strings. A more specific network
/// wins inside a less specific one, whatever the order they are given in. IPv4 is the part
/// `::/96` of the IPv6 space, so an IPv6 network around it (`::/0`) answers for IPv4 too, as
/// in MaxMind's databases.
///
/// # Panics
/// On a network that does not parse, a network given twice with different countries, or a
/// file that cannot be written: this is a test helper, and a bad fixture is a bug in the test.
pub fn write_country_db(path: &Path, networks: &[(&str, &str)]) {
    write_country_db_as(path, Layout::GeoIp2, networks);
}

/// How a database's records spell the country. Free databases differ, so a reader that
/// accepts several needs a fixture of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `{"country": {"iso_code": "DE"}}`: MaxMind's GeoIP2 and GeoLite2 Country, and DB-IP's
    /// own Lite files; `maxminddb::geoip2::Country` decodes it.
    GeoIp2,
    /// `{"country_code": "DE"}`: the mmdb files of the ip-location-db project (npm
    /// `@ip-location-db/*-mmdb`).
    CountryCode,
}

/// [`write_country_db`] with records in `layout`.
pub fn write_country_db_as(path: &Path, layout: Layout, networks: &[(&str, &str)]) {
    let bytes = country_db(layout, networks);
    std::fs::write(path, bytes)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

/// A temp file holding such a database, deleted on drop.
#[derive(Debug)]
pub struct CountryDb {
    file: tempfile::TempPath,
}

impl CountryDb {
    /// Writes `networks` (see [`write_country_db`]) to a new temp file.
    pub fn new(networks: &[(&str, &str)]) -> Self {
        Self::with_layout(Layout::GeoIp2, networks)
    }

    /// Like [`CountryDb::new`], with records in `layout`.
    pub fn with_layout(layout: Layout, networks: &[(&str, &str)]) -> Self {
        let file = tempfile::Builder::new()
            .prefix("kurz-geoip-")
            .suffix(".mmdb")
            .tempfile()
            .expect("creating a temp file for the country database")
            .into_temp_path();
        write_country_db_as(&file, layout, networks);
        Self { file }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// The whole file: search tree, separator, data section, metadata.
fn country_db(layout: Layout, networks: &[(&str, &str)]) -> Vec<u8> {
    let networks = parse_networks(networks);
    let data = DataSection::for_countries(layout, networks.iter().map(|(_, iso)| iso.as_str()));

    let mut tree = Tree::new();
    for (network, iso_code) in &networks {
        tree.insert(network, Record::Data(data.offsets[iso_code]));
    }
    tree.alias_ipv4_mapped();

    let mut file = tree.encode(data.bytes.len());
    file.extend_from_slice(&DATA_SECTION_SEPARATOR);
    file.extend_from_slice(&data.bytes);
    file.extend_from_slice(METADATA_MARKER);
    file.extend_from_slice(&metadata(tree.nodes.len()));
    file
}

/// Parses, normalises to the IPv6 tree's coordinates and sorts from least to most specific:
/// inserting in that order lets a more specific network split a less specific one, never the
/// other way round.
fn parse_networks(networks: &[(&str, &str)]) -> Vec<(Ipv6Net, String)> {
    let mut seen: HashMap<Ipv6Net, &str> = HashMap::new();
    let mut parsed = Vec::with_capacity(networks.len());
    for &(cidr, iso_code) in networks {
        let network = in_ipv6_tree(cidr);
        if let Some(earlier) = seen.insert(network, iso_code) {
            assert_eq!(
                earlier, iso_code,
                "{cidr} is given twice, for {earlier} and for {iso_code}"
            );
            continue;
        }
        parsed.push((network, iso_code.to_owned()));
    }
    parsed.sort_by_key(|(network, _)| network.prefix_len());
    parsed
}

/// Where a network sits in the IPv6 tree: IPv4 under `::/96`, and an IPv4-mapped IPv6 network
/// (`::ffff:a.b.c.d/n`) as the IPv4 network it maps, since the mapped range only points at
/// the IPv4 subtree.
fn in_ipv6_tree(cidr: &str) -> Ipv6Net {
    let network: IpNet = cidr
        .parse()
        .unwrap_or_else(|error| panic!("{cidr:?} is not a network in CIDR notation: {error}"));
    let (bits, prefix_len) = match network.trunc() {
        IpNet::V4(v4) => (u128::from(u32::from(v4.addr())), v4.prefix_len() + 96),
        IpNet::V6(v6) => {
            let bits = u128::from(v6.addr());
            let mapped_mask = !0u128 << 32;
            if v6.prefix_len() >= IPV4_MAPPED.1 && bits & mapped_mask == IPV4_MAPPED.0 {
                (bits & 0xffff_ffff, v6.prefix_len())
            } else {
                (bits, v6.prefix_len())
            }
        }
    };
    Ipv6Net::new(Ipv6Addr::from(bits), prefix_len).expect("a prefix length of at most 128")
}

/// What a search tree record holds: a node, a data record (its offset in the data section),
/// or nothing (the address is not in the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// The search tree as nodes of two records (bit 0, bit 1), node 0 the root of the 128-bit
/// tree. Node numbers in the file are the indexes here.
#[derive(Debug)]
struct Tree {
    nodes: Vec<[Record; 2]>,
}

impl Tree {
    fn new() -> Self {
        Self {
            nodes: vec![[Record::Empty; 2]],
        }
    }

    /// Sets the record covering `network` to `record`, splitting a shorter network's record
    /// on the way (both halves keep its value, so the rest of it still answers).
    fn insert(&mut self, network: &Ipv6Net, record: Record) {
        let bits = u128::from(network.addr());
        let prefix_len = network.prefix_len();
        if prefix_len == 0 {
            // `::/0` has no record of its own: the root is a node, so it is both halves.
            self.nodes[0] = [record; 2];
            return;
        }
        let (node, side) = self.walk(bits, prefix_len);
        assert!(
            !matches!(self.nodes[node][side], Record::Node(_)),
            "{network} was inserted after a more specific network; the caller sorts"
        );
        self.nodes[node][side] = record;
    }

    /// The node and side whose record covers the first `prefix_len` (at least 1) bits of
    /// `bits`, making the nodes on the way.
    fn walk(&mut self, bits: u128, prefix_len: u8) -> (usize, usize) {
        let mut node = 0;
        for depth in 0..prefix_len - 1 {
            let side = bit(bits, depth);
            node = match self.nodes[node][side] {
                Record::Node(next) => next,
                leaf => {
                    let next = self.nodes.len();
                    self.nodes.push([leaf; 2]);
                    self.nodes[node][side] = Record::Node(next);
                    next
                }
            };
        }
        (node, bit(bits, prefix_len - 1))
    }

    /// The record found after following the first `prefix_len` bits of `bits`, without
    /// changing the tree: a data or empty record met earlier covers the whole prefix.
    fn record_at(&self, bits: u128, prefix_len: u8) -> Record {
        let mut record = Record::Node(0);
        for depth in 0..prefix_len {
            match record {
                Record::Node(node) => record = self.nodes[node][bit(bits, depth)],
                leaf => return leaf,
            }
        }
        record
    }

    /// Points `::ffff:0:0/96` at the IPv4 subtree (`::/96`), as MaxMind's databases do. The
    /// tree becomes a graph, so this comes after every insert: an insert through the alias
    /// would change IPv4 answers.
    fn alias_ipv4_mapped(&mut self) {
        let ipv4 = self.record_at(0, 96);
        let (bits, prefix_len) = IPV4_MAPPED;
        let (node, side) = self.walk(bits, prefix_len);
        self.nodes[node][side] = ipv4;
    }

    /// The tree section: each node's two records, 24 bits each, big-endian.
    fn encode(&self, data_len: usize) -> Vec<u8> {
        let node_count = self.nodes.len();
        assert!(
            node_count + DATA_SECTION_SEPARATOR.len() + data_len <= MAX_RECORD,
            "the database outgrew {RECORD_SIZE}-bit records"
        );
        let value = |record: Record| match record {
            Record::Node(node) => node,
            Record::Empty => node_count,
            // The format counts data pointers from the end of the tree, separator included.
            Record::Data(offset) => node_count + DATA_SECTION_SEPARATOR.len() + offset,
        };
        let mut out = Vec::with_capacity(node_count * 6);
        for records in &self.nodes {
            for &record in records {
                out.extend_from_slice(&value(record).to_be_bytes()[size_of::<usize>() - 3..]);
            }
        }
        out
    }
}

/// Bit `depth` of an address, counted from the most significant.
fn bit(bits: u128, depth: u8) -> usize {
    usize::from((bits >> (127 - depth)) & 1 == 1)
}

/// One record per distinct country, and where each one starts.
#[derive(Debug)]
struct DataSection {
    bytes: Vec<u8>,
    offsets: BTreeMap<String, usize>,
}

impl DataSection {
    fn for_countries<'a>(layout: Layout, iso_codes: impl Iterator<Item = &'a str>) -> Self {
        let mut section = Self {
            bytes: Vec::new(),
            offsets: BTreeMap::new(),
        };
        for iso_code in iso_codes {
            if section.offsets.contains_key(iso_code) {
                // One record per country, as real databases share identical records.
                continue;
            }
            section
                .offsets
                .insert(iso_code.to_owned(), section.bytes.len());
            let record = match layout {
                Layout::GeoIp2 => {
                    Value::map([("country", Value::map([("iso_code", Value::str(iso_code))]))])
                }
                Layout::CountryCode => Value::map([("country_code", Value::str(iso_code))]),
            };
            record.encode(&mut section.bytes);
        }
        section
    }
}

/// The metadata map the format requires, with the types the spec gives each key.
fn metadata(node_count: usize) -> Vec<u8> {
    let build_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let metadata = Value::map([
        (
            "node_count",
            Value::U32(u32::try_from(node_count).expect("node count fits 32 bits")),
        ),
        ("record_size", Value::U16(RECORD_SIZE)),
        ("ip_version", Value::U16(6)),
        ("database_type", Value::str(DATABASE_TYPE)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(build_epoch)),
        (
            "description",
            Value::map([("en", Value::str("Kurz test country database"))]),
        ),
    ]);
    let mut out = Vec::new();
    metadata.encode(&mut out);
    out
}

/// The few MaxMind DB data types a country database and its metadata use.
#[derive(Debug)]
enum Value {
    String(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    fn str(s: &str) -> Self {
        Self::String(s.to_owned())
    }

    fn map<const N: usize>(entries: [(&str, Value); N]) -> Self {
        Self::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::String(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Self::U16(n) => unsigned(out, 5, u64::from(*n)),
            Self::U32(n) => unsigned(out, 6, u64::from(*n)),
            Self::U64(n) => unsigned(out, 9, *n),
            Self::Map(entries) => {
                control(out, 7, entries.len());
                for (key, value) in entries {
                    Self::String(key.clone()).encode(out);
                    value.encode(out);
                }
            }
            Self::Array(items) => {
                control(out, 11, items.len());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// An unsigned integer: big-endian without leading zero bytes, its byte count as the size
/// (the format's canonical form; 0 has no bytes at all).
fn unsigned(out: &mut Vec<u8>, type_num: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let significant = &bytes[(n.leading_zeros() / 8) as usize..];
    control(out, type_num, significant.len());
    out.extend_from_slice(significant);
}

/// A control byte: the type in the top 3 bits (types above 7 as 0 plus an extra byte holding
/// type - 7), the size in the low 5 bits, with 1 to 3 more bytes for sizes from 29 up.
fn control(out: &mut Vec<u8>, type_num: u8, size: usize) {
    // (size bits, bytes that follow, what those bytes are counted from)
    let (size_bits, extra_len, base) = match size {
        0..29 => (size, 0, 0),
        29..285 => (29, 1, 29),
        285..65_821 => (30, 2, 285),
        _ => (31, 3, 65_821),
    };
    assert!(
        size - base < 1 << (8 * extra_len.max(1)),
        "{size} is too large for mmdb"
    );
    let size_bits = u8::try_from(size_bits).expect("size bits are below 32");
    if type_num <= 7 {
        out.push(type_num << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&(size - base).to_be_bytes()[size_of::<usize>() - extra_len..]);
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::{Reader, geoip2};

    use super::*;

    fn reader(networks: &[(&str, &str)]) -> Reader<Vec<u8>> {
        Reader::from_source(country_db(Layout::GeoIp2, networks))
            .expect("maxminddb opens the database")
    }

    /// The country `maxminddb` answers for `ip`, as the analytics worker decodes it.
    fn country(reader: &Reader<Vec<u8>>, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.parse().expect("a test address");
        let found = reader.lookup(ip).expect("lookup");
        let record: Option<geoip2::Country> = found.decode().expect("decode");
        record.and_then(|record| record.country.iso_code.map(str::to_owned))
    }

    fn offset(reader: &Reader<Vec<u8>>, ip: &str) -> Option<usize> {
        let ip: IpAddr = ip.parse().expect("a test address");
        reader.lookup(ip).expect("lookup").offset()
    }

    /// Asserts the country (or not found) for each address, reporting every mismatch at once.
    fn assert_countries(reader: &Reader<Vec<u8>>, expected: &[(&str, Option<&str>)]) {
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|&(ip, want)| {
                let got = country(reader, ip);
                (got.as_deref() != want).then(|| format!("{ip}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn ipv4_addresses_inside_a_network_get_its_country() {
        let db = reader(&[("192.0.2.0/24", "DE")]);

        assert_countries(
            &db,
            &[
                ("192.0.2.0", Some("DE")),
                ("192.0.2.77", Some("DE")),
                ("192.0.2.255", Some("DE")),
            ],
        );
    }

    #[test]
    fn ipv6_addresses_inside_a_network_get_its_country() {
        let db = reader(&[("2001:db8::/32", "FR")]);

        assert_countries(
            &db,
            &[
                ("2001:db8::", Some("FR")),
                ("2001:db8:1234::1", Some("FR")),
                ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("FR")),
            ],
        );
    }

    #[test]
    fn addresses_outside_every_network_are_not_found() {
        let db = reader(&[("192.0.2.0/24", "DE"), ("2001:db8::/32", "FR")]);

        assert_countries(
            &db,
            &[
                ("192.0.1.255", None),
                ("192.0.3.0", None),
                ("10.0.0.1", None),
                ("2001:db9::1", None),
                ("::1", None),
                ("fe80::1", None),
            ],
        );
    }

    #[test]
    fn a_nested_network_wins_inside_its_parent_whatever_the_order() {
        for networks in [
            [("10.0.0.0/8", "DE"), ("10.1.0.0/16", "FR")],
            [("10.1.0.0/16", "FR"), ("10.0.0.0/8", "DE")],
        ] {
            let db = reader(&networks);

            assert_countries(
                &db,
                &[
                    ("10.1.2.3", Some("FR")),
                    ("10.0.255.255", Some("DE")),
                    ("10.2.0.0", Some("DE")),
                    ("11.0.0.0", None),
                ],
            );
        }
    }

    #[test]
    fn adjacent_networks_each_answer_up_to_their_boundary() {
        let db = reader(&[
            ("198.51.100.0/25", "DE"),
            ("198.51.100.128/25", "FR"),
            ("2001:db8::/33", "NL"),
            ("2001:db8:8000::/33", "BE"),
        ]);

        assert_countries(
            &db,
            &[
                ("198.51.100.127", Some("DE")),
                ("198.51.100.128", Some("FR")),
                ("198.51.101.0", None),
                ("2001:db8:7fff:ffff:ffff:ffff:ffff:ffff", Some("NL")),
                ("2001:db8:8000::", Some("BE")),
            ],
        );
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_gets_the_ipv4_country() {
        // ::8000:0:0/81 covers the mapped range ::ffff:0:0/96 but not IPv4's ::/96.
        let db = reader(&[("192.0.2.0/24", "DE"), ("::8000:0:0/81", "ZZ")]);

        assert_countries(
            &db,
            &[
                ("::ffff:192.0.2.1", Some("DE")),
                ("::192.0.2.1", Some("DE")),
                // The alias leads to the IPv4 answers, not to the IPv6 network around it.
                ("::ffff:203.0.113.1", None),
                ("::8000:0:1", Some("ZZ")),
            ],
        );
    }

    #[test]
    fn an_ipv6_network_around_ipv4_space_answers_for_ipv4_addresses() {
        let db = reader(&[("::/0", "ZZ"), ("192.0.2.0/24", "DE")]);

        assert_countries(
            &db,
            &[
                ("203.0.113.1", Some("ZZ")),
                ("::ffff:203.0.113.1", Some("ZZ")),
                ("192.0.2.1", Some("DE")),
                ("2001:db8::1", Some("ZZ")),
            ],
        );
    }

    #[test]
    fn an_ipv4_mapped_network_answers_for_its_ipv4_addresses() {
        let db = reader(&[("::ffff:203.0.113.0/120", "JP")]);

        assert_countries(&db, &[("203.0.113.9", Some("JP")), ("203.0.114.0", None)]);
    }

    #[test]
    fn single_addresses_and_the_whole_ipv4_space_are_networks_too() {
        let db = reader(&[
            ("0.0.0.0/0", "US"),
            ("192.0.2.1/32", "DE"),
            ("2001:db8::1/128", "FR"),
        ]);

        assert_countries(
            &db,
            &[
                ("192.0.2.1", Some("DE")),
                ("192.0.2.2", Some("US")),
                ("2001:db8::1", Some("FR")),
                ("2001:db8::2", None),
            ],
        );
    }

    #[test]
    fn networks_of_one_country_share_one_data_record() {
        let db = reader(&[
            ("192.0.2.0/24", "DE"),
            ("2001:db8::/32", "DE"),
            ("198.51.100.0/24", "FR"),
        ]);

        assert_eq!(offset(&db, "192.0.2.1"), offset(&db, "2001:db8::1"));
        assert_ne!(offset(&db, "192.0.2.1"), offset(&db, "198.51.100.1"));
    }

    #[test]
    fn maxminddb_accepts_the_metadata_and_verifies_the_whole_file() {
        let db = reader(&[("192.0.2.0/24", "DE"), ("2001:db8::/32", "FR")]);

        let metadata = db.metadata();
        assert_eq!(metadata.database_type, DATABASE_TYPE);
        assert_eq!(metadata.ip_version, 6);
        assert_eq!(metadata.record_size, RECORD_SIZE);
        assert_eq!(metadata.binary_format_major_version, 2);
        assert_eq!(metadata.languages, ["en"]);
        assert!(metadata.build_epoch > 0);
        // verify() checks the tree, the separator and every data record it reaches.
        db.verify().expect("maxminddb's verifier accepts the file");
    }

    #[test]
    fn an_empty_database_opens_and_finds_nothing() {
        let db = reader(&[]);

        assert_countries(&db, &[("192.0.2.1", None), ("2001:db8::1", None)]);
        db.verify().expect("maxminddb's verifier accepts the file");
    }

    #[test]
    #[should_panic(expected = "given twice")]
    fn a_network_given_for_two_countries_is_refused() {
        country_db(
            Layout::GeoIp2,
            &[("192.0.2.0/24", "DE"), ("192.0.2.0/24", "FR")],
        );
    }

    #[test]
    #[should_panic(expected = "not a network in CIDR notation")]
    fn a_malformed_network_is_refused() {
        country_db(Layout::GeoIp2, &[("192.0.2.0/33", "DE")]);
    }

    #[test]
    fn the_country_code_layout_answers_a_top_level_country_code() {
        let bytes = country_db(
            Layout::CountryCode,
            &[("192.0.2.0/24", "DE"), ("2001:db8::/32", "FR")],
        );
        let db = Reader::from_source(bytes).expect("maxminddb opens the database");

        let code = |ip: &str| -> Option<String> {
            let found = db.lookup(ip.parse().expect("ip")).expect("lookup");
            found
                .decode_path(&maxminddb::path!["country_code"])
                .expect("decode")
        };
        assert_eq!(code("192.0.2.1").as_deref(), Some("DE"));
        assert_eq!(code("2001:db8::1").as_deref(), Some("FR"));
        assert_eq!(code("198.51.100.1"), None);
        // A GeoIP2 reader finds a record there, but no country in it.
        assert_eq!(country(&db, "192.0.2.1"), None);
        db.verify().expect("maxminddb's verifier accepts the file");
    }

    #[test]
    fn the_country_db_file_reads_back_and_is_deleted_on_drop() {
        let db = CountryDb::new(&[("192.0.2.0/24", "DE")]);
        let path = db.path().to_owned();

        let reader = Reader::open_readfile(&path).expect("maxminddb opens the file");
        assert_eq!(country(&reader, "192.0.2.9").as_deref(), Some("DE"));
        drop(db);
        assert!(!path.exists(), "{} is left behind", path.display());
    }
}
