import TDNTestSupport
import Testing

@testable import TDNDNS
@testable import TDNDaemon

/// The UDP worker locates a batch's steered queries together; that must give exactly what one
/// lookup at a time gives, for every spelling of an address.
@Suite("Batched steering lookups")
struct BatchLocateTests {
    @Test func lockstepWalksMatchSingleLookups() throws {
        let snapshot = try SteeringTests.snapshot()
        let seed = UInt64.random(in: 1...UInt64.max)
        var random = SeededRandom(state: seed)
        let lookups = UnsafeMutablePointer<DeferredQuery>.allocate(capacity: 32)
        let results = UnsafeMutablePointer<SteeringLocation>.allocate(capacity: 32)
        defer {
            lookups.deallocate()
            results.deallocate()
        }
        // Addresses near the test networks, so that walks end at many depths.
        let bases: [(UInt64, UInt64, Bool)] = [
            (0x0509_0000 << 32, 0, false), (0x0808_0800 << 32, 0, false), (0x7F00_0001 << 32, 0, false),
            (0x2A01_04F8_0000_0000, 0, true), (0, 0xFFFF_0509_0100, true), (0x0064_FF9B_0000_0000, 0x0808_0808, true),
        ]
        for round in 0..<500 {
            let count = Int.random(in: 1...32, using: &random)
            var expected: [(Int32, Int)] = []
            for index in 0..<count {
                var (high, low, isIPv6) = bases[Int.random(in: 0..<bases.count, using: &random)]
                if Bool.random(using: &random) {
                    if isIPv6 && high != 0 && high != 0x0064_FF9B_0000_0000 {
                        high ^=
                            UInt64.random(in: 0...UInt64.max, using: &random) >> Int.random(in: 8...64, using: &random)
                    } else if isIPv6 {
                        low ^= UInt64.random(in: 0...0xFFFF, using: &random)
                    } else {
                        high ^=
                            (UInt64.random(in: 0...UInt64(UInt32.max), using: &random)
                                >> Int.random(in: 0...31, using: &random)) << 32
                    }
                }
                let lookup = SteeringLookup(high: high, low: low, isIPv6: isIPv6)
                lookups[index] = DeferredQuery(parsed: ParsedQuery(), steeredName: 0, lookup: lookup)
                let location = Responder.classify(snapshot, lookup)
                expected.append((location.classID, location.scope))
            }
            Responder.locate(lookups, count: count, snapshot: snapshot, into: results)
            for index in 0..<count {
                #expect(
                    results[index].classID == expected[index].0 && results[index].scope == expected[index].1,
                    "seed \(seed) round \(round) item \(index)")
            }
        }
    }
}
