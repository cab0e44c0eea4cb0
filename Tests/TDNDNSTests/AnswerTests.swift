import TDNDNS
import TDNTestSupport
import Testing

/// One server for the read-only tests of this target, started on first use.
actor SharedServer {
    static let shared = SharedServer()
    private var server: TestServer?

    func get() async throws -> TestServer {
        if let server { return server }
        let started = try await TestServer.start(zones: Fixtures.zones)
        server = started
        return started
    }
}

/// Where a query is answered: the same expectations hold for each (STYLE.md §6).
enum Setup: String, CaseIterable, CustomTestStringConvertible {
    case inProcess, udp, tcp
    var testDescription: String { rawValue }

    func ask(_ query: Message, _ server: TestServer) throws -> Message {
        switch self {
        case .inProcess:
            let bytes = query.encoded()
            var out = [UInt8](repeating: 0, count: 65535)
            let count = bytes.withUnsafeBytes { input in
                out.withUnsafeMutableBytes { output in
                    Responder().respond(to: input, into: output, transport: .udp, snapshot: server.snapshot)
                }
            }
            return try Message(decoding: Array(out[0..<count]))
        case .udp:
            return try server.client.query(query)
        case .tcp:
            return try server.client.query(query, tcp: true)
        }
    }
}

struct AnswerCase: CustomTestStringConvertible, Sendable {
    var name: String
    var type: RecordType
    var rcode: ResponseCode = .noError
    var authoritative = true
    var answer: [String] = []
    var authority: [String] = []
    var additional: [String] = []
    var testDescription: String { "\(name) \(type)" }
}

let soa = "example.test. 3600 SOA ns1.example.test. hostmaster.example.test. 7 7200 900 1209600 60"
let negativeSOA = "example.test. 60 SOA ns1.example.test. hostmaster.example.test. 7 7200 900 1209600 60"
let subReferral = AnswerCase(
    name: "sub.example.test.", type: .a, authoritative: false,
    authority: ["sub.example.test. 300 NS ns.sub.example.test.", "sub.example.test. 300 NS ns.elsewhere.net."],
    additional: ["ns.sub.example.test. 300 A 192.0.2.54"])

let answerCases: [AnswerCase] = [
    AnswerCase(name: "example.test.", type: .soa, answer: [soa]),
    AnswerCase(
        name: "example.test.", type: .ns,
        answer: ["example.test. 3600 NS ns1.example.test.", "example.test. 3600 NS ns2.example.test."],
        additional: ["ns1.example.test. 300 A 192.0.2.53", "ns2.example.test. 300 AAAA 2001:db8::53"]),
    AnswerCase(
        name: "example.test.", type: .mx, answer: ["example.test. 300 MX 10 mail.example.test."],
        additional: ["mail.example.test. 300 A 192.0.2.25", "mail.example.test. 300 AAAA 2001:db8::25"]),
    // NODATA and NXDOMAIN carry the SOA with min(SOA TTL, MINIMUM) (RFC 2308 §3, §5).
    AnswerCase(name: "example.test.", type: .aaaa, authority: [negativeSOA]),
    AnswerCase(name: "nothere.example.test.", type: .a, rcode: .nxDomain, authority: [negativeSOA]),
    AnswerCase(name: "NoThere.Example.Test.", type: .a, rcode: .nxDomain, authority: [negativeSOA]),
    AnswerCase(name: "deep.er.nothere.example.test.", type: .txt, rcode: .nxDomain, authority: [negativeSOA]),
    // CNAME chains inside the zone are followed (RFC 1034 §4.3.2 step 3a).
    AnswerCase(
        name: "www.example.test.", type: .a,
        answer: ["www.example.test. 300 CNAME example.test.", "example.test. 300 A 192.0.2.1"]),
    AnswerCase(
        name: "chain1.example.test.", type: .a,
        answer: [
            "chain1.example.test. 300 CNAME chain2.example.test.", "chain2.example.test. 300 CNAME www.example.test.",
            "www.example.test. 300 CNAME example.test.", "example.test. 300 A 192.0.2.1",
        ]),
    AnswerCase(
        name: "chain1.example.test.", type: .cname, answer: ["chain1.example.test. 300 CNAME chain2.example.test."]),
    AnswerCase(
        name: "chain1.example.test.", type: .aaaa,
        answer: [
            "chain1.example.test. 300 CNAME chain2.example.test.", "chain2.example.test. 300 CNAME www.example.test.",
            "www.example.test. 300 CNAME example.test.",
        ], authority: [negativeSOA]),
    AnswerCase(
        name: "loop1.example.test.", type: .a,
        answer: [
            "loop1.example.test. 300 CNAME loop2.example.test.", "loop2.example.test. 300 CNAME loop1.example.test.",
        ]),
    // RFC 6604: the RCODE describes the end of the chain.
    AnswerCase(
        name: "dangling.example.test.", type: .a, rcode: .nxDomain,
        answer: ["dangling.example.test. 300 CNAME nothere.example.test."], authority: [negativeSOA]),
    AnswerCase(
        name: "external.example.test.", type: .a, answer: ["external.example.test. 300 CNAME target.example.net."]),
    AnswerCase(
        name: "to-wild.example.test.", type: .a,
        answer: ["to-wild.example.test. 300 CNAME foo.wild.example.test.", "foo.wild.example.test. 300 A 192.0.2.80"]),
    // Wildcards (RFC 4592): synthesised with the query name as owner.
    AnswerCase(name: "anything.wild.example.test.", type: .a, answer: ["anything.wild.example.test. 300 A 192.0.2.80"]),
    AnswerCase(name: "x.y.wild.example.test.", type: .txt, answer: ["x.y.wild.example.test. 300 TXT \"wildcard\""]),
    AnswerCase(name: "any.wild.example.test.", type: .mx, authority: [negativeSOA]),
    AnswerCase(name: "*.wild.example.test.", type: .a, answer: ["*.wild.example.test. 300 A 192.0.2.80"]),
    // Empty non-terminals exist: NODATA, not NXDOMAIN (RFC 8020).
    AnswerCase(name: "b.c.example.test.", type: .a, authority: [negativeSOA]),
    AnswerCase(name: "c.example.test.", type: .a, authority: [negativeSOA]),
    AnswerCase(name: "zz.c.example.test.", type: .a, rcode: .nxDomain, authority: [negativeSOA]),
    AnswerCase(name: "wild.example.test.", type: .a, authority: [negativeSOA]),
    // Delegations: referral with NS in authority and glue, AA clear (RFC 1034 §4.3.2 step 3b).
    subReferral,
    {
        var c = subReferral
        c.name = "deep.sub.example.test."
        c.type = .aaaa
        return c
    }(),
    {
        var c = subReferral
        c.name = "ns.sub.example.test."
        return c
    }(),
    {
        var c = subReferral
        c.name = "sub.example.test."
        c.type = .ns
        return c
    }(),
    // DS belongs to the parent side of the cut (RFC 4035 §3.1.4.1).
    AnswerCase(name: "sub.example.test.", type: .ds, authority: [negativeSOA]),
    AnswerCase(
        name: "_sip._tcp.example.test.", type: .srv,
        answer: ["_sip._tcp.example.test. 300 SRV 0 5 5060 mail.example.test."],
        additional: ["mail.example.test. 300 A 192.0.2.25", "mail.example.test. 300 AAAA 2001:db8::25"]),
    // RFC 9460 §4.1: the TargetName's addresses go in the additional section.
    AnswerCase(
        name: "svc.example.test.", type: .https,
        answer: ["svc.example.test. 300 HTTPS \\# 28 0001046d61696c076578616d706c6504746573740000010003026832"],
        additional: ["mail.example.test. 300 A 192.0.2.25", "mail.example.test. 300 AAAA 2001:db8::25"]),
    AnswerCase(
        name: "unknown.example.test.", type: RecordType(65534),
        answer: ["unknown.example.test. 300 TYPE65534 \\# 3 010203"]),
    // Unknown QTYPEs get NODATA.
    AnswerCase(name: "unknown.example.test.", type: RecordType(999), authority: [negativeSOA]),
    // RFC 8482: ANY gets one RRset.
    AnswerCase(name: "example.test.", type: .any, answer: ["example.test. 300 A 192.0.2.1"]),
    AnswerCase(name: "www.example.test.", type: .any, answer: ["www.example.test. 300 CNAME example.test."]),
    AnswerCase(name: "included.example.test.", type: .a, answer: ["included.example.test. 300 A 192.0.2.77"]),
    AnswerCase(
        name: "semicolon.example.test.", type: .txt, answer: ["semicolon.example.test. 300 TXT \"a;b\" \"quote\\\"d\""]),
    // Names in no zone we serve.
    AnswerCase(name: "outside.invalid.", type: .a, rcode: .refused, authoritative: false),
    AnswerCase(name: "test.", type: .soa, rcode: .refused, authoritative: false),
    AnswerCase(name: ".", type: .ns, rcode: .refused, authoritative: false),
]

@Suite("Answers (RFC 1034 §4.3.2, 2308, 4592, 6604, 8482)")
struct AnswerTests {
    @Test(arguments: Setup.allCases, answerCases)
    func answer(setup: Setup, expected: AnswerCase) async throws {
        let server = try await SharedServer.shared.get()
        let query = Message.query(Fixtures.name(expected.name), expected.type, recursionDesired: true)
        let response = try setup.ask(query, server)
        #expect(response.header.id == query.header.id)
        #expect(response.header[.isResponse])
        #expect(response.header[.recursionDesired], "RD is copied")
        #expect(!response.header[.recursionAvailable])
        #expect(!response.header[.truncated])
        #expect(response.rcode == expected.rcode)
        #expect(response.header[.authoritative] == expected.authoritative)
        #expect(response.questions == query.questions)
        // Names compressed against the question take its case (as in Knot): compare without case.
        func lower(_ lines: [String]) -> [String] { lines.map { $0.lowercased() } }
        #expect(lower(response.answers.map(\.line)) == lower(expected.answer))
        #expect(lower(response.authority.map(\.line)) == lower(expected.authority))
        #expect(lower(response.additional.map(\.line)).sorted() == lower(expected.additional).sorted())
        #expect(response.edns != nil, "one OPT in every reply to an EDNS query")
    }

    @Test(arguments: Setup.allCases)
    func questionCaseIsPreserved(setup: Setup) async throws {
        let server = try await SharedServer.shared.get()
        let query = Message.query(Fixtures.name("mIxEdCaSe.ExAmPlE.tEsT."), .a)
        let response = try setup.ask(query, server)
        #expect(response.questions[0].name.wire == query.questions[0].name.wire)
        #expect(response.answers.first?.name.wire == query.questions[0].name.wire)
        #expect(response.answers.map(\.rdataText) == ["192.0.2.9"])
    }
}
