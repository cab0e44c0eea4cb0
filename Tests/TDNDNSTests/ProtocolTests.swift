import TDNDNS
import TDNTestSupport
import Testing

/// Builds query packets byte by byte, including malformed ones.
struct RawQuery {
    var id: UInt16 = 0xBEEF
    var flags: UInt16 = 0x0100
    var counts: (qd: UInt16, an: UInt16, ns: UInt16, ar: UInt16) = (1, 0, 0, 0)
    var question: [UInt8] = Fixtures.name("example.test.").wire + [0, 6, 0, 1]
    var rest: [UInt8] = []

    static func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }

    var bytes: [UInt8] {
        Self.u16(id) + Self.u16(flags) + Self.u16(counts.qd) + Self.u16(counts.an) + Self.u16(counts.ns)
            + Self.u16(counts.ar) + question + rest
    }

    /// An OPT record: payload size, extended RCODE/version/DO, and raw option bytes.
    static func opt(
        payload: UInt16 = 1232, version: UInt8 = 0, dnssecOK: Bool = false, options: [UInt8] = [], owner: [UInt8] = [0]
    ) -> [UInt8] {
        owner + u16(41) + u16(payload) + [0, version, dnssecOK ? 0x80 : 0, 0] + u16(UInt16(options.count)) + options
    }

    static func ecs(family: UInt16, source: UInt8, scope: UInt8 = 0, address: [UInt8]) -> [UInt8] {
        u16(8) + u16(UInt16(4 + address.count)) + u16(family) + [source, scope] + address
    }

    static func withOPT(_ opt: [UInt8], question: [UInt8]? = nil) -> RawQuery {
        var query = RawQuery()
        if let question { query.question = question }
        query.counts.ar = 1
        query.rest = opt
        return query
    }
}

@Suite("Protocol (RFC 1035, 6891, 7871)", .timing)
struct ProtocolTests {
    func ask(_ bytes: [UInt8]) async throws -> Message {
        let server = try await SharedServer.shared.get()
        return try Message(decoding: try server.client.udp(bytes))
    }

    struct MalformedCase: CustomTestStringConvertible, Sendable {
        var label: String
        var query: RawQuery
        var rcode: ResponseCode
        var echoesQuestion: Bool
        var testDescription: String { label }
    }

    static let malformed: [MalformedCase] = [
        MalformedCase(
            label: "QDCOUNT 0",
            query: {
                var q = RawQuery()
                q.counts.qd = 0
                q.question = []
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "QDCOUNT 2",
            query: {
                var q = RawQuery()
                q.counts.qd = 2
                q.question += q.question
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "label of 64 octets",
            query: {
                var q = RawQuery()
                q.question = [64] + Array(repeating: 97, count: 64) + [0, 0, 1, 0, 1]
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "pointer in QNAME",
            query: {
                var q = RawQuery()
                q.question = [0xC0, 12, 0, 1, 0, 1]
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "name longer than 255",
            query: {
                var q = RawQuery()
                q.question =
                    Array(repeating: [63] + Array(repeating: UInt8(97), count: 63), count: 5).flatMap { $0 } + [
                        0, 0, 1, 0, 1,
                    ]
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "question cut short",
            query: {
                var q = RawQuery()
                q.question.removeLast(3)
                return q
            }(), rcode: .formErr, echoesQuestion: false),
        MalformedCase(
            label: "ANCOUNT 1",
            query: {
                var q = RawQuery()
                q.counts.an = 1
                return q
            }(), rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "ARCOUNT past the end",
            query: {
                var q = RawQuery()
                q.counts.ar = 2
                q.rest = RawQuery.opt()
                return q
            }(), rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "two OPT records",
            query: {
                var q = RawQuery.withOPT(RawQuery.opt() + RawQuery.opt())
                q.counts.ar = 2
                return q
            }(), rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "OPT not owned by the root", query: RawQuery.withOPT(RawQuery.opt(owner: [1, 97, 0])),
            rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "OPT option past its RDATA", query: RawQuery.withOPT(RawQuery.opt(options: [0, 10, 0, 9, 1])),
            rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "ECS IPv4 source prefix 33",
            query: RawQuery.withOPT(
                RawQuery.opt(options: RawQuery.ecs(family: 1, source: 33, address: [1, 2, 3, 4, 5]))), rcode: .formErr,
            echoesQuestion: true),
        MalformedCase(
            label: "ECS IPv6 source prefix 129",
            query: RawQuery.withOPT(
                RawQuery.opt(options: RawQuery.ecs(family: 2, source: 129, address: Array(repeating: 0, count: 17)))),
            rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "ECS bits beyond the prefix",
            query: RawQuery.withOPT(
                RawQuery.opt(options: RawQuery.ecs(family: 1, source: 20, address: [10, 1, 0xFF]))), rcode: .formErr,
            echoesQuestion: true),
        MalformedCase(
            label: "ECS address longer than the prefix",
            query: RawQuery.withOPT(RawQuery.opt(options: RawQuery.ecs(family: 1, source: 8, address: [10, 0]))),
            rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "ECS unknown family",
            query: RawQuery.withOPT(RawQuery.opt(options: RawQuery.ecs(family: 3, source: 0, address: []))),
            rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "two ECS options",
            query: RawQuery.withOPT(
                RawQuery.opt(
                    options: RawQuery.ecs(family: 1, source: 8, address: [10])
                        + RawQuery.ecs(family: 1, source: 8, address: [10]))), rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "QTYPE OPT",
            query: {
                var q = RawQuery()
                q.question = Fixtures.name("example.test.").wire + [0, 41, 0, 1]
                return q
            }(), rcode: .formErr, echoesQuestion: true),
        MalformedCase(
            label: "opcode NOTIFY",
            query: {
                var q = RawQuery()
                q.flags = 0x2000
                return q
            }(), rcode: .notImp, echoesQuestion: true),
        MalformedCase(
            label: "opcode UPDATE",
            query: {
                var q = RawQuery()
                q.flags = 0x2800
                return q
            }(), rcode: .notImp, echoesQuestion: true),
        MalformedCase(
            label: "opcode STATUS",
            query: {
                var q = RawQuery()
                q.flags = 0x1000
                return q
            }(), rcode: .notImp, echoesQuestion: true),
        MalformedCase(
            label: "NOTIFY with an SOA in the answer section",
            query: {
                var q = RawQuery()
                q.flags = 0x2000
                q.counts.an = 1
                q.rest = Fixtures.name("example.test.").wire + [0, 6, 0, 1, 0, 0, 0, 60, 0, 0]
                return q
            }(), rcode: .notImp, echoesQuestion: true),
        MalformedCase(
            label: "unknown opcode 9 with two questions",
            query: {
                var q = RawQuery()
                q.flags = 0x4800
                q.counts.qd = 2
                q.question += q.question
                return q
            }(), rcode: .notImp, echoesQuestion: false),
        MalformedCase(
            label: "class CH",
            query: {
                var q = RawQuery()
                q.question = Fixtures.name("version.bind.").wire + [0, 16, 0, 3]
                return q
            }(), rcode: .refused, echoesQuestion: true),
        MalformedCase(
            label: "class ANY",
            query: {
                var q = RawQuery()
                q.question = Fixtures.name("example.test.").wire + [0, 1, 0, 255]
                return q
            }(), rcode: .refused, echoesQuestion: true),
        MalformedCase(
            label: "AXFR over UDP",
            query: {
                var q = RawQuery()
                q.question = Fixtures.name("example.test.").wire + [0, 252, 0, 1]
                return q
            }(), rcode: .refused, echoesQuestion: true),
        MalformedCase(
            label: "IXFR over UDP",
            query: {
                var q = RawQuery()
                q.question = Fixtures.name("example.test.").wire + [0, 251, 0, 1]
                return q
            }(), rcode: .refused, echoesQuestion: true),
        MalformedCase(
            label: "EDNS version 1", query: RawQuery.withOPT(RawQuery.opt(version: 1)), rcode: .badVers,
            echoesQuestion: true),
    ]

    @Test(arguments: malformed)
    func errorResponses(_ item: MalformedCase) async throws {
        let response = try await ask(item.query.bytes)
        #expect(response.header.id == 0xBEEF, "the ID is copied even into errors")
        #expect(response.header[.isResponse])
        #expect(response.rcode == item.rcode)
        #expect(!response.header[.authoritative])
        #expect(response.answers.isEmpty && response.authority.isEmpty && response.additional.isEmpty)
        #expect(response.questions.count == (item.echoesQuestion ? 1 : 0))
        // An OPT that is itself broken (not owned by the root) does not make the query an EDNS one.
        if item.query.counts.ar > 0 && item.echoesQuestion && item.label != "OPT not owned by the root" {
            #expect(response.edns != nil, "an EDNS query gets an OPT in the reply")
            #expect(response.edns?.clientSubnet == nil)
        }
    }

    @Test func axfrOverTCPIsRefused() async throws {
        let server = try await SharedServer.shared.get()
        let response = try server.client.query(Message.query(Fixtures.name("example.test."), .axfr), tcp: true)
        #expect(response.rcode == .refused)
    }

    @Test(
        arguments: [
            ("response bit set", RawQuery(flags: 0x8100).bytes),
            ("11-octet header", Array(RawQuery().bytes.prefix(11))),
            ("empty datagram", []),
        ] as [(String, [UInt8])])
    func dropped(_ label: String, _ bytes: [UInt8]) async throws {
        let server = try await SharedServer.shared.get()
        var client = server.client
        client.timeoutMilliseconds = 300
        #expect(throws: DNSClient.Failure.self, "\(label) gets no answer") { try client.udp(bytes) }
        // ...and the server still answers the next query.
        let response = try server.client.query(Message.query(Fixtures.name("example.test."), .soa))
        #expect(response.rcode == .noError && response.answers.count == 1)
    }

    @Test func headerFlagsAreCopiedOrCleared() async throws {
        for flags: UInt16 in [0x0000, 0x0100, 0x0010, 0x0110, 0x05B0] {  // RD, CD; AA/TC/RA/AD in a query are ignored
            var query = RawQuery()
            query.flags = flags
            let response = try await ask(query.bytes)
            #expect(response.header[.recursionDesired] == (flags & 0x0100 != 0))
            #expect(response.header[.checkingDisabled] == (flags & 0x0010 != 0))
            #expect(
                !response.header[.recursionAvailable] && !response.header[.truncated]
                    && !response.header[.authenticData])
            #expect(response.header[.authoritative] && response.rcode == .noError)
        }
    }

    @Test func optInReplyAdvertisesOurSizeAndCopiesDO() async throws {
        let response = try await ask(RawQuery.withOPT(RawQuery.opt(payload: 4096, dnssecOK: true)).bytes)
        #expect(response.edns?.udpPayloadSize == 1232)
        #expect(response.edns?.dnssecOK == true)
        #expect(response.edns?.version == 0)
        let plain = try await ask(RawQuery().bytes)
        #expect(plain.edns == nil, "no OPT without EDNS in the query")
    }

    @Test(arguments: [
        (UInt16(1), UInt8(24), [UInt8]([198, 51, 100])),
        (UInt16(1), UInt8(0), [UInt8]()),
        (UInt16(1), UInt8(32), [UInt8]([203, 0, 113, 7])),
        (UInt16(2), UInt8(56), [UInt8]([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x12])),
        (UInt16(1), UInt8(22), [UInt8]([10, 1, 4])),
    ])
    func clientSubnetIsEchoedWithScopeZero(family: UInt16, source: UInt8, address: [UInt8]) async throws {
        let response = try await ask(
            RawQuery.withOPT(RawQuery.opt(options: RawQuery.ecs(family: family, source: source, address: address)))
                .bytes)
        #expect(response.rcode == .noError && response.answers.count == 1)
        // RFC 7871 §7.2.1: same family, source prefix and address; scope 0 for an answer that
        // does not depend on the client.
        #expect(
            response.edns?.clientSubnet
                == ClientSubnet(family: family, sourcePrefixLength: source, scopePrefixLength: 0, address: address))
    }

    @Test func udpSizeLimitsAndTruncation() async throws {
        let server = try await SharedServer.shared.get()
        let medium = Fixtures.name("medium.example.test.")
        let big = Fixtures.name("big.example.test.")
        // ~640 octets: over 512 without EDNS → TC=1 with an empty answer; fits in 1232.
        let noEDNS = try server.client.query(Message.query(medium, .txt, edns: nil))
        #expect(noEDNS.header[.truncated] && noEDNS.answers.isEmpty && noEDNS.header[.authoritative])
        let withEDNS = try server.client.query(Message.query(medium, .txt, edns: EDNS(udpPayloadSize: 1232)))
        #expect(!withEDNS.header[.truncated] && withEDNS.answers.count == 1)
        // The client's size counts only down to 512 (RFC 6891 §6.2.5).
        let tiny = try server.client.query(Message.query(medium, .txt, edns: EDNS(udpPayloadSize: 100)))
        #expect(tiny.header[.truncated])
        // ~1.7 KB: over our 1232 even when the client offers 4096; whole over TCP.
        let bigUDP = try server.client.query(Message.query(big, .txt, edns: EDNS(udpPayloadSize: 4096)))
        #expect(bigUDP.header[.truncated] && bigUDP.answers.isEmpty && bigUDP.edns != nil)
        let bigTCP = try server.client.query(Message.query(big, .txt), tcp: true)
        #expect(!bigTCP.header[.truncated] && bigTCP.answers.count == 8)
        for response in [noEDNS, withEDNS, tiny, bigUDP] {
            #expect(response.encoded().count <= max(512, Int(response.edns?.udpPayloadSize ?? 512)))
        }
    }

    @Test func largerServerPayloadFitsBigAnswers() async throws {
        let server = try await TestServer.start(zones: Fixtures.zones, threads: 1, maxUDPPayload: 4096)
        defer { Task { await server.stop() } }
        let response = try server.client.query(
            Message.query(Fixtures.name("big.example.test."), .txt, edns: EDNS(udpPayloadSize: 4096)))
        #expect(!response.header[.truncated] && response.answers.count == 8)
        #expect(response.edns?.udpPayloadSize == 4096)
    }
}
