import GeoPolicy
import TDNTestSupport
import Testing

@testable import TDNDNS
@testable import TDNDaemon

/// A location class answered per shard (answer-share budgets): each client /24 gets its shard's
/// answer with a scope of at least /24, and its queries are counted in its shard's row, which
/// the demand estimate folds back onto the class.
@Suite("Shards of a location class")
struct ShardTests {
    static func ask(_ responder: Responder, _ snapshot: Snapshot, _ name: String, subnet: [UInt8]) throws -> Message {
        var edns = EDNS()
        edns.clientSubnet = ClientSubnet(
            family: 1, sourcePrefixLength: 24, scopePrefixLength: 0, address: Array(subnet.prefix(3)))
        var query = Message.query(try DomainName(name + ".t.example."), .a, edns: edns)
        query.header.id = 9
        let wire = query.encoded()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let length = wire.withUnsafeBytes { input in
            buffer.withUnsafeMutableBytes { output in
                responder.respond(to: input, into: output, transport: .udp, snapshot: snapshot)
            }
        }
        return try Message(decoding: Array(buffer[0..<length]))
    }

    static func shard(_ subnet: [UInt8]) -> Int {
        SteeringTable.shard(
            high: UInt64(subnet.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }) << 32, isIPv6: false)
    }

    @Test func halfTheShardsOfAClassMoveAndAreCountedApart() throws {
        let loaded = try ConfigurationLoader(config: SteeringTests.config(SteeringTests.directory())).loadAll().get()
        let steering = try #require(loaded.steering)
        let plan = steering.compiler.plan()
        let small = try #require(plan.names.firstIndex { $0.labels == ["small"] })
        // The location class of 5.9.0.0/17 (DE): answered from fra.
        let germany = try #require(
            plan.locations.indices.first { plan.locations[$0].country == "DE" && plan.locations[$0].network == nil })
        #expect(plan.answers[Int(plan.names[small].answerOfClass[germany])].sites == ["fra"])
        for shard in 0..<SteeringTable.shardCount / 2 {
            steering.budgetChoices[.init(name: small, location: germany, shard: shard)] = .init(
                site: 1, sites: ["par"], ttl: 5)
        }
        let rebuilt = loaded.recompiled(health: loaded.health)
        let snapshot = rebuilt.set.snapshot
        let stats = QueryStats()
        let responder = Responder(stats: stats)
        var asked = [Int](repeating: 0, count: SteeringTable.shardCount)
        for third in 0..<128 {
            let subnet: [UInt8] = [5, 9, UInt8(third), 0]
            let shard = Self.shard(subnet)
            asked[shard] += 1
            let moved = shard < SteeringTable.shardCount / 2
            let response = try Self.ask(responder, snapshot, "small", subnet: subnet)
            let addresses = response.answers.map(\.rdataText)
            #expect(addresses == [moved ? "192.0.2.2" : "192.0.2.1"], "5.9.\(third).0/24 in shard \(shard)")
            #expect(response.answers.first?.ttl == (moved ? 5 : 20))
            // A split class answers for no more than the /24 the shard was taken from.
            #expect(response.edns?.clientSubnet?.scopePrefixLength == 24)
            // The other name of the class keeps its answer.
            let sovereign = try Self.ask(responder, snapshot, "sovereign", subnet: subnet)
            #expect(sovereign.answers.map(\.rdataText) == ["192.0.2.1"])
        }
        #expect(Set(asked.indices.filter { asked[$0] > 0 }).count >= 12, "the /24s spread over the shards")
        // Outside the class nothing changed: the US keeps its answer and its wide scope.
        let us = try Self.ask(responder, snapshot, "small", subnet: [8, 8, 8, 0])
        #expect(us.answers.map(\.rdataText) == ["198.51.100.1"])
        #expect(us.edns?.clientSubnet?.scopePrefixLength == 5)

        responder.flushStatistics(force: true)
        let totals = stats.read()
        #expect(totals.steered[.init(name: "small.t.example.", sites: ["par"])] == UInt64(asked.prefix(8).reduce(0, +)))
        #expect(totals.steered[.init(name: "small.t.example.", sites: ["fra"])] == UInt64(asked.suffix(8).reduce(0, +)))
        // Per row: each shard's row holds exactly its queries (rows of moved shards are apart
        // from those that stayed).
        let rows = stats.takeRows()
        #expect(stats.takeRows().isEmpty)
        let part = snapshot.steeringData
        let name = try #require(snapshot.steeredNames.firstIndex(of: "small.t.example."))
        var byRow: [Int: Int] = [:]
        for shard in asked.indices { byRow[part.row(location: germany, shard: shard), default: 0] += asked[shard] }
        for (row, count) in byRow {
            #expect(rows[.init(generation: part.generation, name: name, row: row)] ?? 0 >= UInt64(count))
        }
        #expect(
            part.row(location: germany, shard: 0) != part.row(location: germany, shard: SteeringTable.shardCount - 1))

        // The demand estimate puts the queries back on the class (a minute's worth at once),
        // each counted as the TTL it was answered with: 5 s moved, 20 s not, 20 s from the US.
        let demand = DemandEstimate(geography: steering.compiler.geography)
        demand.note(part, names: snapshot.steeredNames, at: 0)
        demand.update([:], at: 0)
        demand.update(rows.filter { $0.key.name == name }, at: 60)
        let rates = try #require(demand.rates["small.t.example."])
        let moved = Double(asked.prefix(SteeringTable.shardCount / 2).reduce(0, +))
        let expected = (moved * 5 + (128 - moved) * 20) / 60
        #expect(abs(rates.reduce(0, +) - (expected + 20.0 / 60)) < 1e-9)
        #expect(abs(rates[germany] - expected) < 1e-9)
    }
}
