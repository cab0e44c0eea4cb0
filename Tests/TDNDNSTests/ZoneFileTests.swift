import Foundation
import TDNDNS
import TDNTestSupport
import Testing

@Suite("Zone files")
struct ZoneFileTests {
    static let header = ZoneFixture.apex(ttl: 300)

    /// Each bad zone with every `file:line: message` it must produce (the file is t.example.zone).
    static let errorCases: [ConfigErrorCase] = [
        ConfigErrorCase(
            label: "no SOA", text: "@ IN NS ns1\nns1 IN A 192.0.2.1\n",
            errors: ["t.example.zone: no SOA record at the zone apex t.example."]),
        ConfigErrorCase(
            label: "two SOA", text: header + "@ IN SOA ns2 hostmaster 2 7200 900 1209600 60\n",
            errors: ["t.example.zone:5: more than one SOA record at the apex t.example."]),
        ConfigErrorCase(
            label: "SOA below the apex", text: header + "sub IN SOA ns1 hostmaster 1 7200 900 1209600 60\n",
            errors: ["t.example.zone:5: SOA record at sub.t.example., not at the zone apex t.example."]),
        ConfigErrorCase(
            label: "no NS", text: "@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\nns1 IN A 192.0.2.1\n",
            errors: ["t.example.zone:1: no NS records at the zone apex t.example."]),
        ConfigErrorCase(
            label: "CNAME and other data", text: header + "www IN A 192.0.2.1\nwww IN CNAME ns1\n",
            errors: ["t.example.zone:6: CNAME and other data at www.t.example."]),
        ConfigErrorCase(
            label: "data beside a CNAME", text: header + "www IN CNAME ns1\nwww IN TXT \"x\"\n",
            errors: ["t.example.zone:6: CNAME and other data at www.t.example."]),
        ConfigErrorCase(
            label: "two CNAMEs", text: header + "www IN CNAME ns1\nwww IN CNAME @\n",
            errors: ["t.example.zone:6: more than one CNAME at www.t.example."]),
        ConfigErrorCase(
            label: "CNAME at the apex", text: header + "@ IN CNAME other.example.\n",
            errors: ["t.example.zone:5: CNAME and other data at t.example."]),
        ConfigErrorCase(
            label: "out-of-zone data", text: header + "www.other.example. IN A 192.0.2.1\n",
            errors: ["t.example.zone:5: out-of-zone data: www.other.example. is not in zone t.example."]),
        ConfigErrorCase(
            label: "name server without address",
            text: "@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n  IN NS ns1\n  IN NS ns2.elsewhere.example.\n",
            errors: [
                "t.example.zone:2: name server ns1.t.example. at t.example. has no A or AAAA record in the zone (missing glue)"
            ]),
        ConfigErrorCase(
            label: "delegation without glue", text: header + "sub IN NS ns.sub\n",
            errors: [
                "t.example.zone:5: delegation to ns.sub.t.example. at sub.t.example. has no A or AAAA record in the zone (missing glue)"
            ]),
        ConfigErrorCase(
            label: "bad IPv4 address", text: header + "www IN A 192.0.2.300\n",
            errors: ["t.example.zone:5: syntax error, could not parse the RR's rdata: www IN A 192.0.2.300"]),
        ConfigErrorCase(
            label: "unknown type", text: header + "www IN BOGUS 1\n",
            errors: ["t.example.zone:5: syntax error, could not parse the RR's rdata: www IN BOGUS 1"]),
        ConfigErrorCase(
            label: "unclosed parenthesis", text: header + "www IN TXT ( \"a\"\n",
            errors: ["t.example.zone:5: '(' not closed before the end of the file"]),
        ConfigErrorCase(
            label: "unmatched parenthesis", text: header + "www IN TXT \"a\" )\n",
            errors: ["t.example.zone:5: ')' without a matching '('"]),
        ConfigErrorCase(
            label: "unknown directive", text: header + "$GENERATE 1-2 h$ A 192.0.2.$\n",
            errors: ["t.example.zone:5: unknown directive $GENERATE"]),
        ConfigErrorCase(
            label: "missing include", text: header + "$INCLUDE nothere.inc\n",
            errors: ["t.example.zone:5: $INCLUDE: cannot read DIR/nothere.inc"]),
        ConfigErrorCase(
            label: "bad $TTL", text: "$TTL forever\n" + header,
            errors: ["t.example.zone:1: $TTL takes one TTL (seconds, or units such as 1h30m)"]),
        ConfigErrorCase(
            label: "class CH", text: header + "www CH TXT \"x\"\n",
            errors: ["t.example.zone:5: only class IN is served"]),
        ConfigErrorCase(
            label: "all errors at once",
            text: header + "www IN A 192.0.2.300\nx.other. IN A 192.0.2.1\nsub IN NS ns.sub\n",
            errors: [
                "t.example.zone:5: syntax error, could not parse the RR's rdata: www IN A 192.0.2.300",
                "t.example.zone:6: out-of-zone data: x.other. is not in zone t.example.",
                "t.example.zone:7: delegation to ns.sub.t.example. at sub.t.example. has no A or AAAA record in the zone (missing glue)",
            ]),
    ]

    @Test(arguments: errorCases)
    func errorsNameFileAndLine(_ item: ConfigErrorCase) throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(directory + "/t.example.zone", item.text)
        guard case .failure(let failure) = ZoneSet.load(directory: directory) else {
            Issue.record("the zone loaded")
            return
        }
        let errors = failure.errors.map { $0.description.replacingOccurrences(of: directory + "/", with: "") }
        let expected = item.errors.map {
            $0.replacingOccurrences(of: "DIR/", with: directory + "/").replacingOccurrences(
                of: directory + "/", with: "")
        }
        #expect(errors.sorted() == expected.sorted())
    }

    @Test func directivesAndSyntax() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(
            directory + "/t.example.zone",
            """
            $TTL 1h30m
            @ IN SOA ns1 hostmaster ( 1 ; serial
                                      7200 900 1209600 60 )
              IN NS ns1
            ns1 IN A 192.0.2.53
            $ORIGIN sub.t.example.
            host 120 IN A 192.0.2.7
                     IN AAAA 2001:db8::7      ; owner carried over
            $INCLUDE other/part.inc in.t.example.
            back IN A 192.0.2.8               ; the include's $ORIGIN does not leak back
            $TTL 0
            zero IN A 192.0.2.9
            txt IN TXT "semi;colon" "paren(" "esc\\"aped" 'not quoted'
            """)
        try FileManager.default.createDirectory(atPath: directory + "/other", withIntermediateDirectories: true)
        writeFile(directory + "/other/part.inc", "$ORIGIN elsewhere.t.example.\nleaf IN A 192.0.2.10\n")
        writeFile(directory + "/other/unused.inc.zone.txt", "garbage")
        let zones = try ZoneCompiler.load(directory: directory).get()
        let zone = try #require(zones.first)
        func rrset(_ name: String, _ type: RecordType) -> RRset? { zone.rrsets[Fixtures.name(name)]?[type] }
        #expect(rrset("t.example.", .ns)?.ttl == 5400)
        #expect(rrset("host.sub.t.example.", .a)?.ttl == 120)
        #expect(rrset("host.sub.t.example.", .aaaa) != nil)
        #expect(rrset("leaf.elsewhere.t.example.", .a) != nil)
        #expect(rrset("back.sub.t.example.", .a) != nil)
        #expect(rrset("zero.sub.t.example.", .a)?.ttl == 0)
        let txt = try #require(rrset("txt.sub.t.example.", .txt))
        let record = ResourceRecord(name: txt.owner, type: .txt, ttl: txt.ttl, rdata: txt.rdatas[0])
        #expect(record.rdataText == #""semi;colon" "paren(" "esc\"aped" "'not" "quoted'""#)
        #expect(zone.files.count == 2)
        #expect(zone.serial == 1 && zone.negativeTTL == 60)
    }

    @Test func duplicateRecordsAndMixedTTLsFormOneRRset() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(
            directory + "/t.example.zone",
            Self.header + "www 100 IN A 192.0.2.1\nwww 50 IN A 192.0.2.2\nWWW 100 IN A 192.0.2.1\n")
        let zone = try #require(try ZoneCompiler.load(directory: directory).get().first)
        let set = try #require(zone.rrsets[Fixtures.name("www.t.example.")]?[.a])
        #expect(set.rdatas.count == 2)
        #expect(set.ttl == 50, "RFC 2181 §5.2: one TTL per RRset")
    }

    @Test func zoneNamesComeFromFileNames() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        writeFile(directory + "/a.example.zone", Self.header.replacingOccurrences(of: "ns1 IN A", with: "ns1 IN A"))
        writeFile(directory + "/b.example.zone", Self.header)
        writeFile(directory + "/notes.txt", "not a zone")
        let zones = try ZoneCompiler.load(directory: directory).get()
        #expect(zones.map(\.origin.description) == ["a.example.", "b.example."])
    }
}
