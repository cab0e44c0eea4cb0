import TDNDNS
import TDNTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Packets that are random or mutated from valid queries: compression loops, truncated
/// headers, bogus counts, oversize labels.
func hostilePacket(_ random: inout SeededRandom) -> [UInt8] {
    let seeds: [[UInt8]] = [
        RawQuery().bytes,
        RawQuery.withOPT(RawQuery.opt(options: RawQuery.ecs(family: 1, source: 24, address: [192, 0, 2]))).bytes,
        Message.query(Fixtures.name("anything.wild.example.test."), .txt).encoded(),
        Message.query(Fixtures.name("deep.sub.example.test."), .a).encoded(),
    ]
    var packet = seeds[Int.random(in: 0..<seeds.count, using: &random)]
    switch Int.random(in: 0..<7, using: &random) {
    case 0:
        packet = (0..<Int.random(in: 0..<600, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    case 1:
        packet = Array(packet.prefix(Int.random(in: 0..<packet.count, using: &random)))
    case 2:
        for _ in 0..<Int.random(in: 1...8, using: &random) {
            packet[Int.random(in: 0..<packet.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
        }
    case 3:
        for offset in stride(from: 4, to: 12, by: 2) where Bool.random(using: &random) {
            packet[offset] = UInt8.random(in: 0...255, using: &random)
            packet[offset + 1] = UInt8.random(in: 0...255, using: &random)
        }
    case 4:
        // A compression loop in an additional record's owner name.
        packet[10] = 0
        packet[11] = 1
        let loopAt = packet.count
        packet += [0xC0 | UInt8(loopAt >> 8), UInt8(loopAt & 0xFF)] + [0, 41, 4, 0, 0, 0, 0, 0, 0, 0]
    case 5:
        // An oversize label in the question.
        packet =
            Array(packet.prefix(12)) + [UInt8.random(in: 64...255, using: &random)] + Array(repeating: 97, count: 80)
            + [0, 0, 1, 0, 1]
    default:
        packet += (0..<Int.random(in: 1..<40, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }
    return packet
}

@Suite("Robustness", .cpuBound)
struct RobustnessTests {
    static let seed = UInt64(ProcessInfoSeed.value)

    @Test func responderSurvivesHostilePacketsInProcess() async throws {
        let server = try await SharedServer.shared.get()
        var random = SeededRandom(state: Self.seed)
        let responder = Responder()
        var out = [UInt8](repeating: 0, count: 65535)
        for round in 0..<50_000 {
            let packet = hostilePacket(&random)
            let count = packet.withUnsafeBytes { input in
                out.withUnsafeMutableBytes {
                    responder.respond(to: input, into: $0, transport: .udp, snapshot: server.snapshot)
                }
            }
            #expect(count == 0 || (count >= 12 && count <= 1232), "seed \(Self.seed) round \(round)")
            if count > 0 {
                #expect(
                    out[0] == packet[0] && out[1] == packet[1], "the ID is copied (seed \(Self.seed) round \(round))")
                #expect(out[2] & 0x80 != 0)
            }
        }
    }

    @Test func serverSurvivesHostilePacketsOverSockets() async throws {
        let server = try await SharedServer.shared.get()
        var random = SeededRandom(state: Self.seed ^ 0xABCDEF)
        var storage = server.address.socketAddressForTests
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        for _ in 0..<3000 {
            let packet = hostilePacket(&random)
            _ = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, packet, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        // Over TCP too: garbage frames on one connection.
        let tcp = try server.client.openTCP()
        for _ in 0..<200 {
            let packet = hostilePacket(&random)
            try? server.client.sendAll(tcp, [UInt8(packet.count >> 8), UInt8(packet.count & 0xFF)] + packet)
        }
        close(tcp)
        let response = try server.client.query(Message.query(Fixtures.name("www.example.test."), .a))
        #expect(response.rcode == .noError)
        #expect(response.answers.map(\.rdataText) == ["example.test.", "192.0.2.1"], "seed \(Self.seed)")
        let viaTCP = try server.client.query(Message.query(Fixtures.name("www.example.test."), .a), tcp: true)
        #expect(viaTCP.answers.count == 2)
    }

    /// Encode → decode gives the message back, for random messages.
    @Test func messageRoundTrip() throws {
        var random = SeededRandom(state: Self.seed)
        let types: [RecordType] = [.a, .aaaa, .ns, .cname, .mx, .txt, .srv, .soa, RecordType(65000)]
        for round in 0..<2000 {
            func randomName() -> DomainName {
                let labels = (0..<Int.random(in: 0...4, using: &random)).map { _ in
                    (0..<Int.random(in: 1...12, using: &random)).map { _ in UInt8.random(in: 33...126, using: &random) }
                }
                return try! DomainName(wire: labels.flatMap { [UInt8($0.count)] + $0 } + [0])
            }
            func randomRecord() -> ResourceRecord {
                let type = types[Int.random(in: 0..<types.count, using: &random)]
                var rdata: [UInt8]
                switch type {
                case .a: rdata = (0..<4).map { _ in UInt8.random(in: 0...255, using: &random) }
                case .aaaa: rdata = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
                case .ns, .cname: rdata = randomName().wire
                case .mx: rdata = [0, 10] + randomName().wire
                case .srv: rdata = [0, 1, 0, 2, 0, 3] + randomName().wire
                case .soa:
                    rdata =
                        randomName().wire + randomName().wire
                        + (0..<20).map { _ in UInt8.random(in: 0...255, using: &random) }
                default:
                    rdata = (0..<Int.random(in: 0...30, using: &random)).map { _ in
                        UInt8.random(in: 0...255, using: &random)
                    }
                }
                return ResourceRecord(
                    name: randomName(), type: type, ttl: UInt32.random(in: 0...86400, using: &random), rdata: rdata)
            }
            var message = Message(
                header: Header(
                    id: UInt16.random(in: 0...65535, using: &random),
                    flags: UInt16.random(in: 0...65535, using: &random) & 0xFFF0))
            message.questions = [
                Question(name: randomName(), type: types[Int.random(in: 0..<types.count, using: &random)])
            ]
            message.answers = (0..<Int.random(in: 0...3, using: &random)).map { _ in randomRecord() }
            message.authority = (0..<Int.random(in: 0...2, using: &random)).map { _ in randomRecord() }
            message.additional = (0..<Int.random(in: 0...2, using: &random)).map { _ in randomRecord() }
            if Bool.random(using: &random) {
                message.edns = EDNS(
                    udpPayloadSize: 1232,
                    clientSubnet: ClientSubnet(
                        address: [10, 20, 30, 40], prefix: UInt8.random(in: 0...32, using: &random)))
            }
            let decoded = try Message(decoding: message.encoded())
            var expected = message
            expected.header.questionCount = UInt16(message.questions.count)
            expected.header.answerCount = UInt16(message.answers.count)
            expected.header.authorityCount = UInt16(message.authority.count)
            expected.header.additionalCount = UInt16(message.additional.count + (message.edns == nil ? 0 : 1))
            #expect(decoded == expected, "seed \(Self.seed) round \(round)")
        }
    }
}

/// TDN_TEST_SEED=N reproduces a run; otherwise a new seed each run, printed on failure.
enum ProcessInfoSeed {
    static let value: UInt64 = {
        if let text = getenv("TDN_TEST_SEED"), let seed = UInt64(String(cString: text)) { return seed }
        return UInt64.random(in: 1...UInt64.max)
    }()
}

extension ListenAddress {
    var socketAddressForTests: sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        return address
    }
}
