import CAllocationCounter
import Glibc
import TDNTestSupport
import Testing

@testable import TDNDNS
@testable import TDNDaemon

/// The query path allocates nothing: static answers, steered answers (by ECS, by the sender's
/// address, and through the UDP batch's deferred pass), NXDOMAIN, FORMERR and the other
/// errors, with statistics on. Counted by replacing malloc and its kin in the test process
/// (`CAllocationCounter`).
@Suite("Allocations on the query path")
struct AllocationTests {
    static func wire(_ name: String, _ type: RecordType, subnet: ClientSubnet? = nil, edns: Bool = true) -> [UInt8] {
        var ednsRecord = EDNS()
        ednsRecord.clientSubnet = subnet
        var query = Message.query(try! DomainName(name), type, edns: edns ? ednsRecord : nil)
        query.header.id = 99
        return query.encoded()
    }

    @Test func theCounterSeesAnAllocation() {
        tdn_allocations_begin()
        let made = [Int](repeating: 7, count: Int.random(in: 100...200))
        let counted = tdn_allocations_end()
        #expect(made.count >= 100)
        #expect(counted > 0, "the counter must see the array's allocation")
    }

    @Test func queriesAllocateNothing() throws {
        let snapshot = try SteeringTests.snapshot()
        let responder = Responder(stats: QueryStats())

        var malformed = Self.wire("ns1.t.example.", .a)
        malformed[12] = 0x41  // a label type that does not exist
        var twoQuestions = Self.wire("ns1.t.example.", .a, edns: false)
        twoQuestions[5] = 2
        let queries: [(String, [UInt8])] = [
            ("static A", Self.wire("ns1.t.example.", .a)),
            ("static SOA without EDNS", Self.wire("t.example.", .soa, edns: false)),
            ("NODATA", Self.wire("ns1.t.example.", .txt)),
            ("NXDOMAIN", Self.wire("nope.t.example.", .a)),
            ("REFUSED", Self.wire("www.example.org.", .a)),
            ("AXFR", Self.wire("t.example.", .axfr)),
            ("FORMERR", malformed),
            ("FORMERR, two questions", twoQuestions),
            (
                "steered by ECS",
                Self.wire("small.t.example.", .a, subnet: ClientSubnet(address: [5, 9, 1, 0], prefix: 24))
            ),
            (
                "steered AAAA by ECS",
                Self.wire(
                    "sovereign.t.example.", .aaaa,
                    subnet: ClientSubnet(
                        address: [0x2A, 0x01, 0x04, 0xF8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], prefix: 48))
            ),
            ("steered by sender", Self.wire("small.t.example.", .a)),
        ]
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_addr.s_addr = UInt32(0x0808_0808).bigEndian
        var out = [UInt8](repeating: 0, count: 4096)
        var deferred = DeferredQuery()
        var location = SteeringLocation()

        /// Each query answered `times` times both ways, at once and the UDP batch's way (defer,
        /// locate, then write), with the allocations of those answers counted: per query, the
        /// last two lengths and the count.
        func answerAll(times: Int) -> [(direct: Int, batched: Int, allocations: Int)] {
            var results: [(direct: Int, batched: Int, allocations: Int)] = []
            results.reserveCapacity(queries.count)
            withUnsafeBytes(of: &peer) { peerBytes in
                out.withUnsafeMutableBytes { output in
                    for (_, query) in queries {
                        query.withUnsafeBytes { input in
                            var direct = 0
                            var batched = 0
                            tdn_allocations_begin()
                            for _ in 0..<times {
                                direct = responder.respond(
                                    to: input, into: output, transport: .udp, snapshot: snapshot,
                                    peer: peerBytes.baseAddress)
                                batched = responder.respond(
                                    to: input, into: output, transport: .udp, snapshot: snapshot,
                                    peer: peerBytes.baseAddress, deferred: &deferred)
                                if batched == Responder.deferredResult {
                                    Responder.locate(&deferred, count: 1, snapshot: snapshot, into: &location)
                                    batched = responder.respond(
                                        deferred: deferred, location: location, query: input, into: output,
                                        transport: .udp, snapshot: snapshot)
                                }
                            }
                            let allocations = tdn_allocations_end()
                            results.append((direct, batched, allocations))
                        }
                    }
                }
            }
            return results
        }

        // First use: lazy runtime metadata, the counters' first flush.
        let first = answerAll(times: 1)
        #expect(first.allSatisfy { $0.direct > 0 && $0.batched == $0.direct }, "every query is answered: \(first)")
        let counted = answerAll(times: 100)
        for ((label, _), (result, before)) in zip(queries, zip(counted, first)) {
            #expect(result.allocations == 0, "\(label): \(result.allocations) allocations in 100 queries")
            #expect(result.direct == before.direct && result.batched == before.batched, "\(label): the same answer")
        }
    }
}
